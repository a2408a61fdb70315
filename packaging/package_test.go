// Package packaging_test builds ferry's release files with
// scripts/package.sh (make package) and installs the .deb on this host.
package packaging_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

const (
	pkgVersion = "1.2.3-pkgtest"
	debVersion = "1.2.3+pkgtest" // scripts/package.sh's Debian spelling
	installed  = "/usr/bin/ferry"
)

func sh(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	return shWithin(t, 10*time.Minute, dir, name, args...)
}

// shWithin is sh with its own bound: packaging compresses the ferry binary
// and, for /usr/lib/ferry, the engine and kubectl again (xz of ~150 MB),
// which takes minutes on a busy 2-core host.
func shWithin(t *testing.T, limit time.Duration, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = dir
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dpkg runs dpkg, waiting (bounded) while another dpkg or apt holds its lock.
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if !strings.Contains(string(out), "lock") || time.Now().After(deadline) {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(2 * time.Second)
	}
}

// The .deb installs with dpkg -i, the installed ferry is the packaged
// version, runs a job (its kubectl the root-owned one the package installed
// in /usr/lib/ferry: nothing is unpacked into the runner's state dir) and
// passes ferry check; dpkg -r removes it and leaves the runner's state
// alone. The
// tarball and SHA256SUMS come from the same run. Built once, for this
// host's arch.
func TestDebInstallRunRemove(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("no dpkg: not a Debian host")
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i installs into /usr/bin and needs root (CI runs as root)")
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "ferry").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skipf("a ferry package is installed on this host (%s): the test does not replace it", out)
	}
	if _, err := os.Lstat(installed); err == nil {
		t.Skipf("%s exists and is not from a package: the test does not replace it", installed)
	}

	dir := t.TempDir()
	bin, lib, err := ferrybuild.BuildPackaged(filepath.Join(dir, "build"), pkgVersion)
	if err != nil {
		t.Fatal(err)
	}
	dist := filepath.Join(dir, "dist")
	root := ferrybuild.RepoRoot()
	shWithin(t, 30*time.Minute, root, "bash", "scripts/package.sh", "-v", pkgVersion, "-a", runtime.GOARCH, "-b", bin, "-l", lib, "-o", dist)

	deb := filepath.Join(dist, "ferry_"+debVersion+"_"+runtime.GOARCH+".deb")
	tarball := "ferry_" + pkgVersion + "_linux_" + runtime.GOARCH + ".tar.gz"
	sums := sh(t, dist, "sha256sum", "-c", "SHA256SUMS")
	for _, f := range []string{filepath.Base(deb), tarball} {
		if !strings.Contains(sums, f+": OK") {
			t.Errorf("SHA256SUMS does not cover %s:\n%s", f, sums)
		}
	}
	list := sh(t, dist, "tar", "-tzf", tarball)
	for _, f := range []string{"/ferry", "/config.toml.example", "/README.md", "/docs/executor.md"} {
		if !strings.Contains(list, strings.TrimSuffix(tarball, ".tar.gz")+f+"\n") {
			t.Errorf("tarball lacks %s:\n%s", f, list)
		}
	}

	t.Cleanup(func() { exec.Command("dpkg", "-r", "ferry").Run() })
	dpkg(t, "-i", deb)
	if got := strings.TrimSpace(sh(t, dir, installed, "version")); got != "ferry "+pkgVersion {
		t.Errorf("installed ferry says %q, want ferry %s", got, pkgVersion)
	}
	files := dpkg(t, "-L", "ferry")
	libs, _ := filepath.Glob(filepath.Join(lib, "ferry-*"))
	if len(libs) != 2 {
		t.Fatalf("build -l wrote %q, want the engine and the kubectl", libs)
	}
	for _, l := range libs {
		f := "/usr/lib/ferry/" + filepath.Base(l)
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o755 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: %v %v, want root's, mode 0755", f, err, fi)
		}
	}
	if target, err := os.Readlink("/usr/lib/ferry/ferry-kubectl"); err != nil || !strings.HasPrefix(target, "ferry-kubectl-") {
		all, _ := filepath.Glob("/usr/lib/ferry/*")
		t.Errorf("/usr/lib/ferry/ferry-kubectl: %q %v, want the link to ferry-kubectl-SUM (%q)", target, err, all)
	}
	for _, f := range []string{installed, "/usr/lib/ferry/" + filepath.Base(libs[0]), "/usr/lib/ferry/" + filepath.Base(libs[1]), "/usr/lib/ferry/ferry-kubectl", "/usr/share/doc/ferry/config.toml.example", "/usr/share/doc/ferry/README.md", "/usr/share/doc/ferry/docs/executor.md"} {
		if !strings.Contains(files, f+"\n") {
			t.Errorf("package lacks %s:\n%s", f, files)
		}
	}

	// A job through the installed binary, as a runner would run it.
	state := filepath.Join(dir, "runner", ".ferry")
	d, err := runnerdriver.New(runnerdriver.Config{
		FerryBinary: installed,
		BaseDir:     filepath.Join(dir, "runner"),
		// The driver's repositories are under the test's /tmp, which a
		// private /tmp hides from get_sources.
		ExtraArgs: []string{"--state-dir=" + state, "--private-tmp=off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res := d.RunJob(ctx, runnerdriver.Job{Name: "installed", Script: []string{"kubectl version --client", "echo job-ran-$((40+2))"}})
	if !res.Succeeded() || !strings.Contains(res.Log, "Client Version: ferry "+pkgVersion) || !strings.Contains(res.Log, "job-ran-42") {
		t.Fatalf("job with the installed ferry: %s %s\n%s\n%s", res.Status, res.Error, res.Log, res.SystemLog)
	}
	if strings.Contains(res.Log, "not using the installed engine") {
		t.Errorf("the installed engine was not trusted:\n%s", res.Log)
	}

	// ferry check of a runner that calls the installed binary.
	cfg := filepath.Join(dir, "config.toml")
	block := "[[runners]]\n  name = \"pkg\"\n  token = \"glrt-PLANTEDpkgtoken\"\n  executor = \"custom\"\n  [runners.custom]\n"
	for _, s := range []string{"config", "prepare", "run", "cleanup"} {
		block += "    " + s + "_exec = \"" + installed + "\"\n    " + s + "_args = [\"" + s + "\", \"--state-dir=" + state + "\", \"--builds-dir=" + filepath.Join(dir, "runner", "builds") + "\"]\n"
	}
	block += "    graceful_kill_timeout = 30\n"
	if err := os.WriteFile(cfg, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(installed, "check", "--config", cfg, "--user", "root")
	out, err := check.CombinedOutput()
	if err != nil || strings.Contains(string(out), "glrt-PLANTED") {
		t.Errorf("ferry check of the installed ferry: %v\n%s", err, out)
	}
	for _, want := range []string{"ok    ferry: ferry " + pkgVersion, "ok    engine: installed, root-owned: nothing to unpack or compare; /usr/lib/ferry/ferry-engine-", "reports ferry " + pkgVersion, `ok    runner "pkg": custom executor ferry (` + installed + ")"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ferry check does not say %q:\n%s", want, out)
		}
	}

	// The runner's state (a job dir of a job in flight) outlives the
	// package; the job had nothing unpacked into it.
	leftover := filepath.Join(state, "jobs", "00000000-1", "meta.json")
	if err := os.MkdirAll(filepath.Dir(leftover), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(leftover, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := sh(t, state, "find", ".", "-printf", "%p %s %m\n")
	dpkg(t, "-r", "ferry")
	for _, gone := range []string{installed, "/usr/share/doc/ferry", "/usr/lib/ferry"} {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("%s is still there after dpkg -r", gone)
		}
	}
	if after := sh(t, state, "find", ".", "-printf", "%p %s %m\n"); after != before || strings.Contains(after, "ferry-engine-") {
		t.Errorf("dpkg -r changed the runner's state dir:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
