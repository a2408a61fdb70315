package stages_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
)

// withShim turns the kubectl link back on (newJob turns it off).
func withShim(j *fakeJob) {
	for i, a := range j.args {
		if a == "--kubectl-shim=false" {
			j.args = append(j.args[:i:i], j.args[i+1:]...)
			return
		}
	}
}

// The ferry binary unpacks its embedded engine in prepare and links the
// job's kubectl to it; the link runs ferry's kubectl.
func TestPrepareUnpacksEngineForKubectl(t *testing.T) {
	j := newJob(t, "300")
	withShim(j)
	j.mustPrepare()
	link := filepath.Join(j.state().BinDir(), "kubectl")
	target, err := os.Readlink(link)
	if err != nil {
		t.Fatal(err)
	}
	engineDir := filepath.Join(j.stateDir, enginebin.DirName)
	if filepath.Dir(target) != engineDir || !strings.HasPrefix(filepath.Base(target), "ferry-kubectl-") {
		t.Fatalf("kubectl links to %s, want the small kubectl in %s", target, engineDir)
	}
	fi, err := os.Stat(target)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("engine %s: %v %v", target, fi, err)
	}
	out, err := exec.Command(link, "version", "--client").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kubectl-compatible") {
		t.Fatalf("bin/kubectl: %v %s", err, out)
	}
	// A second job reuses the unpacked engine.
	j2 := newJob(t, "301")
	withShim(j2)
	j2.stateDir = j.stateDir
	j2.args[0] = "--state-dir=" + j.stateDir
	j2.mustPrepare()
	if t2, _ := os.Readlink(filepath.Join(j2.state().BinDir(), "kubectl")); t2 != target {
		t.Errorf("second job links to %s, want %s", t2, target)
	}
	if ents, _ := os.ReadDir(engineDir); len(ents) != 2 {
		t.Errorf("engine dir has %d entries, want the engine and the small kubectl", len(ents))
	}
}

// The job's kubectl (executor/kubectl, unpacked by prepare) links neither
// kubectl's command code nor kustomize nor client-go's discovery: their
// package initialisers would be paid by every apply
// (docs/kubectl.md, "Two kubectl binaries"). Its engine links them all.
func TestJobKubectlDoesNotLinkKubectlCode(t *testing.T) {
	j := newJob(t, "302")
	withShim(j)
	j.mustPrepare()
	target, err := os.Readlink(filepath.Join(j.state().BinDir(), "kubectl"))
	if err != nil {
		t.Fatal(err)
	}
	engine, _ := enginebin.Partner(target)
	modules := func(bin string) map[string]bool {
		out, err := exec.Command("go", "version", "-m", bin).Output()
		if err != nil {
			t.Fatalf("go version -m %s: %v", bin, err)
		}
		deps := map[string]bool{}
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "dep" {
				deps[f[1]] = true
			}
		}
		return deps
	}
	small, full := modules(target), modules(engine)
	if !small["k8s.io/client-go"] {
		t.Fatalf("no build info naming client-go in %s: not the small kubectl?", target)
	}
	for _, m := range []string{"k8s.io/kubectl", "k8s.io/cli-runtime", "k8s.io/component-base", "sigs.k8s.io/kustomize/api", "sigs.k8s.io/kustomize/kyaml"} {
		if small[m] {
			t.Errorf("the job's kubectl links %s", m)
		}
		if !full[m] {
			t.Errorf("its engine does not link %s (the check would prove nothing)", m)
		}
	}
	// Packages, not only modules: client-go's discovery registers every
	// built-in type at start.
	out, err := exec.Command("go", "list", "-deps", "../executor/kubectl").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"k8s.io/client-go/discovery", "k8s.io/client-go/kubernetes/scheme"} {
		if slices.Contains(strings.Fields(string(out)), p) {
			t.Errorf("executor/kubectl imports %s", p)
		}
	}
}

// The stages a job runs most (every run stage, cleanup, config) never start
// the engine: with FERRY_ENGINE pointing nowhere they still work, while a
// prepare that needs the engine fails as a system failure naming it.
func TestOnlyPrepareNeedsTheEngine(t *testing.T) {
	j := newJob(t, "302")
	withShim(j)
	j.extra = append(j.extra, "FERRY_ENGINE=/nonexistent/ferry-engine")
	r := j.ferry("prepare")
	if r.code != 2 || !strings.Contains(r.stderr, "FERRY_ENGINE=/nonexistent/ferry-engine") ||
		strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("prepare without engine: exit %d, stderr %q; want SYSTEM_FAILURE 2 and one line naming FERRY_ENGINE", r.code, r.stderr)
	}
	// Without the features that need it, prepare runs in the ferry binary.
	j.args = append(j.args, "--kubectl-shim=false")
	j.mustPrepare()
	for _, stage := range []string{"prepare_script", "build_script", "after_script", "upload_artifacts_on_success"} {
		r := j.ferry("run", j.script("echo ran-"+stage), stage)
		if r.code != 0 || !strings.Contains(r.stdout, "ran-"+stage) {
			t.Errorf("run %s: exit %d\n%s%s", stage, r.code, r.stdout, r.stderr)
		}
	}
	if r := j.ferry("config"); r.code != 0 {
		t.Errorf("config: exit %d %s", r.code, r.stderr)
	}
	if r := j.ferry("cleanup"); r.code != 0 {
		t.Errorf("cleanup: exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(j.stateDir, enginebin.DirName)); err == nil {
		t.Error("an engine was unpacked although FERRY_ENGINE was set")
	}
}

// The dotenv Secrets store is engine code: its capture stages hand off.
func TestDotenvKubeStoreNeedsEngine(t *testing.T) {
	j := newJob(t, "303")
	j.mustPrepare()
	j.extra = append(j.extra, "FERRY_ENGINE=/nonexistent/ferry-engine")
	j.args = append(j.args, "--dotenv-store=kubernetes")
	if r := j.ferry("run", j.script("true"), "build_script"); r.code != 0 {
		t.Errorf("build_script: exit %d %s", r.code, r.stderr)
	}
	r := j.ferry("run", j.script("true"), "upload_artifacts_on_success")
	if r.code != 2 || !strings.Contains(r.stderr, "FERRY_ENGINE") {
		t.Errorf("upload stage with the kubernetes store: exit %d %q, want a handoff to the engine", r.code, r.stderr)
	}
}

// `ferry kubectl` and a kubectl link to the ferry binary itself both reach
// the engine's kubectl.
func TestKubectlThroughFerryBinary(t *testing.T) {
	state := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "FERRY_STATE_DIR=" + state}
	c := exec.Command(ferryBin, "kubectl", "version", "--client")
	c.Env = env
	if out, err := c.CombinedOutput(); err != nil || !strings.Contains(string(out), "kubectl-compatible") {
		t.Fatalf("ferry kubectl: %v %s", err, out)
	}
	link := filepath.Join(t.TempDir(), "kubectl")
	if err := os.Symlink(ferryBin, link); err != nil {
		t.Fatal(err)
	}
	c = exec.Command(link, "version", "--client")
	c.Env = env
	if out, err := c.CombinedOutput(); err != nil || !strings.Contains(string(out), "kubectl-compatible") {
		t.Fatalf("kubectl -> ferry: %v %s", err, out)
	}
}

// The point of the split: the binary the runner starts for every stage
// does not link client-go (its package initialisers cost ~8 ms a process).
func TestFerryBinaryDoesNotLinkClientGo(t *testing.T) {
	out, err := exec.Command("go", "version", "-m", ferryBin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "gitlab.com/ferry-ci/ferry") {
		t.Fatalf("no build info in %s:\n%s", ferryBin, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "dep" && (strings.HasPrefix(f[1], "k8s.io/") || strings.HasPrefix(f[1], "sigs.k8s.io/")) {
			t.Errorf("ferry links %s", f[1])
		}
	}
}

// A job that rewrites the unpacked engine does not get it run by the next
// job's prepare: ferry unpacks it again and says so in the job log.
func TestModifiedEngineNotRunByNextPrepare(t *testing.T) {
	j := newJob(t, "304")
	withShim(j)
	j.mustPrepare()
	target, err := os.Readlink(filepath.Join(j.state().BinDir(), "kubectl"))
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(j.base, "trojan-ran")
	if err := os.WriteFile(target, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	j2 := newJob(t, "305")
	withShim(j2)
	j2.stateDir = j.stateDir
	j2.args[0] = "--state-dir=" + j.stateDir
	r := j2.ferry("prepare")
	if r.code != 0 {
		t.Fatalf("prepare: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("prepare ran the modified engine")
	}
	if !strings.Contains(r.stderr, "is not the one this ferry carries") || !strings.Contains(r.stderr, target) {
		t.Errorf("no warning naming %s in the job log:\n%s", target, r.stderr)
	}
	out, err := exec.Command(filepath.Join(j2.state().BinDir(), "kubectl"), "version", "--client").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kubectl-compatible") {
		t.Fatalf("restored engine: %v %s", err, out)
	}
}
