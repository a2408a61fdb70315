package stages_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHeldRulesetFollowsTheDisk: a stage takes the ruleset prepare built
// (kept by the private /tmp's holder) only while it is the one a build
// would make. The runner makes CI_PROJECT_DIR again between stages (a
// clone does): the held ruleset's rule holds the old directory, so a
// stage that took it could not write the new one. Each stage still writes
// its project dir, and a path hidden from the job stays hidden in every
// stage.
func TestHeldRulesetFollowsTheDisk(t *testing.T) {
	// A runner's layout (as BenchmarkSandboxCost's): state, builds and
	// HOME outside /tmp; the payload and stage scripts in the job's own
	// runner temp dir, under /tmp, hidden whole in the private /tmp.
	j := newJobAt(t, "", hiddenOutsideTmp(t))
	own := filepath.Join(t.TempDir(), "custom-executor1")
	if err := os.Mkdir(own, 0o700); err != nil {
		t.Fatal(err)
	}
	j.payload = filepath.Join(own, "response.json")
	j.writePayload(3600, nil)
	j.extra = append(j.extra, "TMPDIR="+own)
	hidden := hiddenOutsideTmp(t)
	j.args = append(j.args, "--sandbox-hide="+hidden)
	j.mustPrepare()
	defer j.ferry("cleanup")
	secret := filepath.Join(hidden, "secret")
	if err := os.WriteFile(secret, []byte("OTHER-SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stage := func(n string) {
		t.Helper()
		script := filepath.Join(own, "script."+n)
		body := "echo " + n + " > " + j.project + "/" + n + " && cat " + j.project + "/" + n + "\ncat " + secret + " 2>/dev/null && echo SECRET-READ\ntrue\n"
		if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
			t.Fatal(err)
		}
		r := j.ferry("run", script, "build_script")
		if r.code != 0 || !strings.Contains(r.stdout, n+"\n") {
			t.Fatalf("stage %s: exit %d, want its write in the project dir:\n%s%s", n, r.code, r.stdout, r.stderr)
		}
		if strings.Contains(r.stdout, "SECRET-READ") || strings.Contains(r.stdout, "OTHER-SECRET") {
			t.Fatalf("stage %s read a hidden file:\n%s", n, r.stdout)
		}
	}
	stage("one")
	stage("two") // the held ruleset, still current
	if err := os.RemoveAll(j.project); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(j.project, 0o700); err != nil {
		t.Fatal(err)
	}
	stage("three") // built again: the project dir is another inode
	stage("four")
}

// hiddenOutsideTmp is a directory for --sandbox-hide that Landlock must
// hide (the private /tmp hides what is under /tmp anyway). /var/cache, not
// /var/lib: an entry another test makes beside it changes the walked
// parent, and the stage then builds its ruleset instead of taking the
// held one this test is about.
func hiddenOutsideTmp(t *testing.T) string {
	t.Helper()
	d, err := dirOutsideTmp(t, "/var/cache", "ferry-hidden-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}
