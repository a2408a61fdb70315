package enginebin

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// fakeEngine is a real executable: what the tests embed instead of ~60 MB.
const fakeEngine = "#!/bin/sh\necho \"engine $0 $*\"\n"

func withEmbedded(t *testing.T, blob, sum string) {
	t.Helper()
	oldBlob, oldSum := embedded, EmbeddedSum
	embedded, EmbeddedSum = blob, sum
	t.Cleanup(func() { embedded, EmbeddedSum = oldBlob, oldSum })
}

func noEnv(string) (string, bool) { return "", false }

func TestUnpackOnceThenReuse(t *testing.T) {
	withEmbedded(t, fakeEngine, "")
	root := filepath.Join(t.TempDir(), "state")
	p, err := Locate(root, noEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Without a stamped sum the name comes from hashing the engine.
	h := sha256.Sum256([]byte(fakeEngine))
	if want := filepath.Join(root, DirName, "ferry-engine-"+hex.EncodeToString(h[:])[:16]); p != want {
		t.Fatalf("path %s, want %s", p, want)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("engine mode %v, want 0700", fi.Mode().Perm())
	}
	for _, d := range []string{root, filepath.Dir(p)} {
		if di, _ := os.Stat(d); di.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %v, want 0700", d, di.Mode().Perm())
		}
	}
	out, err := exec.Command(p, "a").Output()
	if err != nil || !strings.HasPrefix(string(out), "engine ") {
		t.Fatalf("unpacked engine does not run: %v %q", err, out)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	p2, err := Locate(root, noEnv, nil)
	if err != nil || p2 != p {
		t.Fatalf("second Locate: %q %v", p2, err)
	}
	fi2, _ := os.Stat(p2)
	if fi2.Sys().(*syscall.Stat_t).Ino != ino {
		t.Error("second Locate rewrote the engine")
	}
}

// A different engine build (an upgrade) gets its own file; the old one stays
// for running jobs until unused for KeepUnused, then goes.
func TestUpgradeKeepsRecentEnginesAndSweepsOld(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, DirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "ferry-engine-0000000000000000")
	recent := filepath.Join(dir, "ferry-engine-1111111111111111")
	leftover := filepath.Join(dir, ".unpack-123")
	for _, f := range []string{old, recent, leftover} {
		if err := os.WriteFile(f, []byte("x"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-KeepUnused - time.Hour)
	os.Chtimes(old, long, long)
	os.Chtimes(leftover, long, long)
	withEmbedded(t, fakeEngine, "2222222222222222ffff")
	p, err := Locate(root, noEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != "ferry-engine-2222222222222222" {
		t.Errorf("stamped sum not used: %s", p)
	}
	for f, want := range map[string]bool{old: false, leftover: false, recent: true, p: true} {
		if _, err := os.Stat(f); (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", filepath.Base(f), err == nil, want)
		}
	}
}

// A job prepared before an upgrade keeps its engine however long it runs:
// an engine a job's bin/ links to is never swept, however old; once the job
// dir is gone, the next unpack sweeps it.
func TestSweepKeepsEnginesOfRunningJobs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, DirName)
	bin := filepath.Join(root, jobstate.JobsDirName, "abcd1234-42", "bin")
	for _, d := range []string{dir, bin} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	running := filepath.Join(dir, "ferry-engine-3333333333333333")
	unused := filepath.Join(dir, "ferry-engine-4444444444444444")
	long := time.Now().Add(-KeepUnused - 24*time.Hour)
	for _, f := range []string{running, unused} {
		if err := os.WriteFile(f, []byte("x"), 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(f, long, long)
	}
	if err := os.Symlink(running, filepath.Join(bin, "kubectl")); err != nil {
		t.Fatal(err)
	}
	withEmbedded(t, fakeEngine, "5555555555555555")
	if _, err := Locate(root, noEnv, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(running); err != nil {
		t.Errorf("the engine a running job links to was swept: %v", err)
	}
	if _, err := os.Stat(unused); err == nil {
		t.Error("an old engine no job uses was kept")
	}
	// The job ends; the next unpack (another upgrade) sweeps its engine.
	if err := os.RemoveAll(filepath.Join(root, jobstate.JobsDirName)); err != nil {
		t.Fatal(err)
	}
	withEmbedded(t, fakeEngine+"#", "6666666666666666")
	if _, err := Locate(root, noEnv, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(running); err == nil {
		t.Error("the engine of an ended job was kept past KeepUnused")
	}
}

// Concurrent jobs of one host unpack at once: every caller gets a complete
// engine and no temporary file is left.
func TestConcurrentUnpack(t *testing.T) {
	withEmbedded(t, fakeEngine+strings.Repeat("# padding\n", 100000), "")
	root := t.TempDir()
	var wg sync.WaitGroup
	paths := make([]string, 16)
	errs := make([]error, 16)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = Locate(root, noEnv, nil)
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("caller %d: %q %v", i, paths[i], errs[i])
		}
	}
	b, err := os.ReadFile(paths[0])
	if err != nil || string(b) != embedded {
		t.Fatalf("engine content wrong (%d bytes, %v)", len(b), err)
	}
	ents, _ := os.ReadDir(filepath.Dir(paths[0]))
	if len(ents) != 1 {
		t.Errorf("want only the engine, got %d entries", len(ents))
	}
}

// Whoever can write to the engine dir could swap what ferry runs.
func TestRefusesUnsafeEngineDir(t *testing.T) {
	withEmbedded(t, fakeEngine, "")
	t.Run("group-writable", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, DirName)
		os.Mkdir(dir, 0o700)
		os.Chmod(dir, 0o770)
		_, err := Locate(root, noEnv, nil)
		if err == nil || !strings.Contains(err.Error(), "group or others could change what is in it") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		root := t.TempDir()
		other := t.TempDir()
		os.Symlink(other, filepath.Join(root, DirName))
		_, err := Locate(root, noEnv, nil)
		if err == nil || !strings.Contains(err.Error(), "is a symlink: refused") {
			t.Fatalf("got %v", err)
		}
		if ents, _ := os.ReadDir(other); len(ents) != 0 {
			t.Error("unpacked through the symlink")
		}
	})
	t.Run("state root is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, nil, 0o600)
		_, err := Locate(filepath.Join(f, "state"), noEnv, nil)
		if err == nil || !strings.Contains(err.Error(), "cannot create state dir") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestLocateOverrideAndMissing(t *testing.T) {
	withEmbedded(t, fakeEngine, "")
	exe := filepath.Join(t.TempDir(), "my-engine")
	os.WriteFile(exe, []byte(fakeEngine), 0o755)
	env := func(v string) func(string) (string, bool) {
		return func(k string) (string, bool) { return v, k == EnvVar }
	}
	root := t.TempDir()
	if p, err := Locate(root, env(exe), nil); err != nil || p != exe {
		t.Fatalf("FERRY_ENGINE: %q %v", p, err)
	}
	if _, err := os.Stat(filepath.Join(root, DirName)); err == nil {
		t.Error("unpacked although FERRY_ENGINE was set")
	}
	if _, err := Locate(root, env("/nonexistent/engine"), nil); err == nil || !strings.Contains(err.Error(), EnvVar+"=/nonexistent/engine") {
		t.Fatalf("missing FERRY_ENGINE file: %v", err)
	}
	noexec := filepath.Join(t.TempDir(), "noexec")
	os.WriteFile(noexec, []byte(fakeEngine), 0o644)
	if _, err := Locate(root, env(noexec), nil); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("non-executable FERRY_ENGINE: %v", err)
	}
	// Neither embedded nor beside the test binary: a clear way out.
	withEmbedded(t, "", "")
	if _, err := Locate(root, noEnv, nil); err == nil || !strings.Contains(err.Error(), "built without it") || !strings.Contains(err.Error(), EnvVar) {
		t.Fatalf("no engine: %v", err)
	}
}

// A job runs as ferry's user and could rewrite the unpacked engine; the next
// call must notice and unpack it again rather than run it.
func TestModifiedEngineIsUnpackedAgain(t *testing.T) {
	withEmbedded(t, fakeEngine, "")
	root := t.TempDir()
	p, err := Locate(root, noEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	same := strings.Replace(fakeEngine, "engine", "evil!!", 1) // same size
	for name, tamper := range map[string]func() error{
		"same size":   func() error { return os.WriteFile(p, []byte(same), 0o700) },
		"longer":      func() error { return os.WriteFile(p, []byte(fakeEngine+"curl evil\n"), 0o700) },
		"a symlink":   func() error { os.Remove(p); return os.Symlink("/bin/true", p) },
		"a directory": func() error { os.Remove(p); return os.Mkdir(p, 0o700) },
	} {
		if err := tamper(); err != nil {
			t.Fatal(name, err)
		}
		var warned []string
		got, err := Locate(root, noEnv, func(m string) { warned = append(warned, m) })
		if name == "a directory" {
			// rename cannot replace a directory: refused, never run.
			if err == nil {
				t.Errorf("%s: no error", name)
			}
			os.Remove(p)
			continue
		}
		if err != nil || got != p {
			t.Fatalf("%s: %q %v", name, got, err)
		}
		fi, _ := os.Lstat(p)
		b, _ := os.ReadFile(p)
		if !fi.Mode().IsRegular() || string(b) != fakeEngine {
			t.Errorf("%s: engine not restored (mode %v, %q)", name, fi.Mode(), b)
		}
		if len(warned) != 1 || !strings.Contains(warned[0], p) {
			t.Errorf("%s: warnings %q", name, warned)
		}
	}
}

// The small kubectl is unpacked beside the engine under the same sum; each
// finds the other by name; a job linking to the kubectl keeps the pair
// from the sweep; a modified kubectl is unpacked again like the engine.
func TestUnpacksKubectlBesideEngine(t *testing.T) {
	const fakeKubectl = "#!/bin/sh\necho \"kubectl $0 $*\"\n"
	withEmbedded(t, fakeEngine, "")
	embeddedKubectl = fakeKubectl
	t.Cleanup(func() { embeddedKubectl = "" })
	root := t.TempDir()
	engine, err := Locate(root, noEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte(fakeEngine + fakeKubectl))
	sum := hex.EncodeToString(h[:])[:16]
	dir := filepath.Join(root, DirName)
	if engine != filepath.Join(dir, "ferry-engine-"+sum) {
		t.Fatalf("engine %s, want ferry-engine-%s (the pair's sum)", engine, sum)
	}
	kubectl := KubectlFor(engine)
	if kubectl != filepath.Join(dir, "ferry-kubectl-"+sum) {
		t.Fatalf("KubectlFor = %s", kubectl)
	}
	if b, err := os.ReadFile(kubectl); err != nil || string(b) != fakeKubectl {
		t.Fatalf("kubectl content %q %v", b, err)
	}
	if p, ok := Partner(kubectl); !ok || p != engine {
		t.Errorf("Partner(kubectl) = %s %v", p, ok)
	}
	// Without a kubectl beside it, jobs get the engine itself.
	lone := filepath.Join(t.TempDir(), "ferry-engine")
	os.WriteFile(lone, []byte(fakeEngine), 0o700)
	if got := KubectlFor(lone); got != lone {
		t.Errorf("KubectlFor(lone engine) = %s", got)
	}

	// Tampered kubectl: unpacked again, with a warning naming it.
	os.WriteFile(kubectl, []byte("#!/bin/sh\ncurl evil\n"), 0o700)
	var warned []string
	if _, err := Locate(root, noEnv, func(m string) { warned = append(warned, m) }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(kubectl); string(b) != fakeKubectl || len(warned) != 1 || !strings.Contains(warned[0], kubectl) {
		t.Errorf("tampered kubectl: now %q, warnings %q", b, warned)
	}

	// An upgrade: a running job's link to the old kubectl keeps the old
	// pair, however old; once the job is gone the pair is swept.
	bin := filepath.Join(root, jobstate.JobsDirName, "abcd1234-7", "bin")
	os.MkdirAll(bin, 0o700)
	if err := os.Symlink(kubectl, filepath.Join(bin, "kubectl")); err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-KeepUnused - time.Hour)
	os.Chtimes(engine, long, long)
	os.Chtimes(kubectl, long, long)
	embedded = fakeEngine + "#v2\n"
	if _, err := Locate(root, noEnv, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{engine, kubectl} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s of a running job swept: %v", filepath.Base(p), err)
		}
	}
	os.RemoveAll(filepath.Join(root, jobstate.JobsDirName))
	embedded = fakeEngine + "#v3\n"
	if _, err := Locate(root, noEnv, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{engine, kubectl} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s of no job, unused for longer than KeepUnused, kept", filepath.Base(p))
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 4 {
		t.Errorf("engine dir: %d entries, want the v2 and v3 pairs", len(ents))
	}
}

// A package installs the engine and the small kubectl root-owned in
// <prefix>/lib/ferry beside <prefix>/bin/ferry: ferry runs them as they are,
// unpacking and comparing nothing. Anything a user other than root could
// have changed (the files, their directories) or files of another build
// make it unpack its own copy as before, saying why.
func TestInstalledEngineIsUsedAsIs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the installed files must be root-owned (CI runs as root)")
	}
	const sum = "0123456789abcdef0123"
	withEmbedded(t, fakeEngine, sum)
	oldKubectl, oldSelf := embeddedKubectl, selfPath
	embeddedKubectl = fakeEngine + "# kubectl\n"
	t.Cleanup(func() { embeddedKubectl, selfPath = oldKubectl, oldSelf })

	setup := func(t *testing.T) (prefix, engine, kubectl, state string) {
		prefix = t.TempDir()
		if err := os.Chmod(prefix, 0o755); err != nil {
			t.Fatal(err)
		}
		self := filepath.Join(prefix, "bin", "ferry")
		lib := filepath.Join(prefix, "lib", "ferry")
		for _, d := range []string{filepath.Dir(self), lib} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		engine, kubectl = filepath.Join(lib, "ferry-engine-"+sum[:16]), filepath.Join(lib, "ferry-kubectl-"+sum[:16])
		for _, f := range []string{self, engine, kubectl} {
			if err := os.WriteFile(f, []byte(fakeEngine), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		selfPath = func() (string, error) { return self, nil }
		return prefix, engine, kubectl, filepath.Join(t.TempDir(), "state")
	}

	t.Run("trusted", func(t *testing.T) {
		_, engine, kubectl, state := setup(t)
		var warned []string
		p, err := Locate(state, noEnv, func(s string) { warned = append(warned, s) })
		if err != nil || p != engine || len(warned) > 0 {
			t.Fatalf("Locate = %s, %v (warned %q); want the installed %s", p, err, warned, engine)
		}
		if _, err := os.Stat(filepath.Join(state, DirName)); !os.IsNotExist(err) {
			t.Errorf("the state dir got an engine dir (%v): nothing should be unpacked", err)
		}
		if k := KubectlFor(p); k != kubectl {
			t.Errorf("KubectlFor = %s, want %s", k, kubectl)
		}
		if k := JobKubectl(p); k != kubectl {
			t.Errorf("JobKubectl without the stable link = %s, want %s", k, kubectl)
		}
		// The package's stable link: jobs link to it, so that an upgrade
		// (which removes the old SUM's files) leaves them a kubectl.
		stable := filepath.Join(filepath.Dir(kubectl), KubectlName)
		if err := os.Symlink(filepath.Base(kubectl), stable); err != nil {
			t.Fatal(err)
		}
		if k := JobKubectl(p); k != stable {
			t.Errorf("JobKubectl = %s, want the stable link %s", k, stable)
		}
		if self, _ := selfPath(); JobKubectl(self) != KubectlFor(self) {
			t.Errorf("JobKubectl of a binary without a partner is not KubectlFor's")
		}
	})
	for _, tc := range []struct {
		name, reason string
		spoil        func(t *testing.T, prefix, engine, kubectl string) error
	}{
		{"group-writable engine", "is writable by others than root", func(t *testing.T, _, engine, _ string) error { return os.Chmod(engine, 0o775) }},
		{"kubectl of another user", "is owned by uid 4242, not root", func(t *testing.T, _, _, kubectl string) error { return os.Chown(kubectl, 4242, 0) }},
		{"world-writable lib dir", "is writable by others than root", func(t *testing.T, _, engine, _ string) error { return os.Chmod(filepath.Dir(engine), 0o777) }},
		{"dir of another user", "is owned by uid 4242, not root", func(t *testing.T, prefix, _, _ string) error { return os.Chown(filepath.Join(prefix, "lib"), 4242, 0) }},
		{"symlinked engine", "is not a regular file", func(t *testing.T, _, engine, _ string) error {
			os.Rename(engine, engine+".real")
			return os.Symlink(engine+".real", engine)
		}},
		{"another build's engine", "is missing", func(t *testing.T, _, engine, _ string) error {
			return os.Rename(engine, strings.Replace(engine, sum[:16], "fedcba9876543210", 1))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix, engine, kubectl, state := setup(t)
			if err := tc.spoil(t, prefix, engine, kubectl); err != nil {
				t.Fatal(err)
			}
			var warned []string
			p, err := Locate(state, noEnv, func(s string) { warned = append(warned, s) })
			if err != nil || p != filepath.Join(state, DirName, "ferry-engine-"+sum[:16]) {
				t.Fatalf("Locate = %s, %v; want the engine unpacked into the state dir", p, err)
			}
			if len(warned) != 1 || !strings.Contains(warned[0], "not using the installed engine "+engine) || !strings.Contains(warned[0], tc.reason) {
				t.Errorf("warned %q, want one line naming %s and %q", warned, engine, tc.reason)
			}
		})
	}
	t.Run("no lib dir", func(t *testing.T) {
		_, engine, _, state := setup(t)
		if err := os.RemoveAll(filepath.Dir(engine)); err != nil {
			t.Fatal(err)
		}
		var warned []string
		p, err := Locate(state, noEnv, func(s string) { warned = append(warned, s) })
		if err != nil || !strings.HasPrefix(p, state) || len(warned) > 0 {
			t.Fatalf("Locate = %s, %v (warned %q); want a silent unpack (make build's single file)", p, err, warned)
		}
	})
}
