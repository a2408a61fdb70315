package sandbox

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/asuser"
	"gitlab.com/ferry-ci/ferry/internal/proctest"
)

func needLandlock(t testing.TB) int {
	t.Helper()
	abi, err := Probe()
	if err != nil {
		// The CI kernel has Landlock; a machine without it says why here.
		t.Skipf("no sandbox on this kernel: %v", err)
	}
	return abi
}

func TestProbe(t *testing.T) {
	abi, err := Probe()
	if err != nil {
		if abi >= MinABI {
			t.Fatalf("Probe() = %d, %v: an error with a usable ABI", abi, err)
		}
		t.Skipf("no Landlock: %v", err)
	}
	if abi < MinABI {
		t.Fatalf("Probe() = %d without error, want >= %d", abi, MinABI)
	}
}

// run runs a bash command under r and returns its combined output and exit code.
func run(t *testing.T, r *Ruleset, script string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("bash", "-c", script)
	cmd.Stdout, cmd.Stderr = &out, &out
	code := proctest.ExitCode(t, OnThread(r, func() error { return cmd.Run() }))
	return out.String(), code
}

func TestPolicyFiles(t *testing.T) {
	needLandlock(t)
	root := t.TempDir()
	mk := func(rel, content string) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := mk("home/.ssh/id_ed25519", "PRIVATE")
	other := mk("state/jobs/other/kubeconfig", "OTHER-JOB")
	own := mk("state/jobs/own/kubeconfig", "OWN-JOB")
	visible := mk("home/.bashrc", "BASHRC")
	build := filepath.Join(root, "builds/own")
	if err := os.MkdirAll(build, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "home/.ssh"), filepath.Join(root, "home/ssh-link")); err != nil {
		t.Fatal(err)
	}
	r, err := Policy{
		Hide:      []string{filepath.Join(root, "home/.ssh"), filepath.Join(root, "state"), filepath.Join(root, "builds")},
		ReadOnly:  []string{filepath.Dir(own)},
		ReadWrite: []string{build},
		Devices:   []string{"/dev"},
	}.Build()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	for _, tc := range []struct {
		script string
		ok     bool
	}{
		{"cat " + visible, true},
		{"cat " + own, true},
		{"cat /etc/hostname || cat /etc/os-release", true},
		{"echo x > /dev/null", true},
		{"cat " + secret, false},
		{"cat " + filepath.Join(root, "home/ssh-link/id_ed25519"), false},
		{"cat " + other, false},
		{"ls " + filepath.Dir(other), false},
		{"echo x > " + own, false},
		{"echo x > " + filepath.Join(root, "state/jobs/new"), false},
		{"echo x > " + visible, false},
		{"mkdir -p " + build + "/a/b && echo x > " + build + "/a/b/f && mv " + build + "/a/b/f " + build + "/g && cat " + build + "/g", true},
		{"rm -rf " + build + "/a && mkdir " + build + "/a && git init -q " + build + "/a/repo", true},
		{"echo x > " + filepath.Join(root, "builds/other"), false},
	} {
		out, code := run(t, r, tc.script)
		if (code == 0) != tc.ok {
			t.Errorf("%s: exit %d (want ok=%v): %s", tc.script, code, tc.ok, out)
		}
		if !tc.ok && (strings.Contains(out, "PRIVATE") || strings.Contains(out, "OTHER-JOB")) {
			t.Errorf("%s: leaked: %s", tc.script, out)
		}
	}
	if b, _ := os.ReadFile(own); string(b) != "OWN-JOB" {
		t.Errorf("own kubeconfig changed to %q", b)
	}
}

// TestHideLeftToFilePermissions, as an unprivileged user: a hidden path
// that user can neither read, write nor search and does not own (root's
// 0700 /etc/gitlab-runner) gets no rule and costs no walk of its siblings;
// it stays unreadable (file permissions) and its siblings readable. A path
// the user owns, even mode 000, is hidden by Landlock all the same: the
// job could chmod it back.
func TestHideLeftToFilePermissions(t *testing.T) {
	needLandlock(t)
	vals := map[string]string{}
	if !asuser.IsChild() {
		if os.Geteuid() != 0 {
			t.Skip("makes root-owned files: needs root (CI runs as root)")
		}
		// Not under /tmp: asuser's user must reach it.
		base, err := os.MkdirTemp("/var/lib", "ferry-sandbox-dac-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(base) })
		etc, mine := filepath.Join(base, "etc"), filepath.Join(base, "mine")
		for _, d := range []string{etc, filepath.Join(etc, "gitlab-runner"), mine} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		os.Chmod(base, 0o755)
		os.Chmod(filepath.Join(etc, "gitlab-runner"), 0o700)
		os.Chmod(mine, 0o1777)
		for i := 0; i < 50; i++ {
			if err := os.WriteFile(filepath.Join(etc, "f"+strconv.Itoa(i)), []byte("SIBLING\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(etc, "gitlab-runner", "config.toml"), []byte("RUNNER-TOKEN\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		vals["ETC"], vals["MINE"] = etc, mine
	}
	asuser.Run(t, asuser.Spec{User: "ferry-sandbox-dac", Values: vals}, func(t *testing.T, env asuser.Env) {
		etc, mine := env.Values["ETC"], env.Values["MINE"]
		build := func(hide ...string) *Ruleset {
			r, err := Policy{Hide: hide, Devices: []string{"/dev"}}.Build()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		}
		none := build().Rules()
		// The control: a path of /etc the user can read costs the walk.
		if r := build(filepath.Join(etc, "f1")); r.Rules() < 50 || r.Skipped() != 0 {
			t.Fatalf("hiding a readable file: %d rules, %d skipped; want the walk of its 50 siblings", r.Rules(), r.Skipped())
		}
		r := build(filepath.Join(etc, "gitlab-runner"))
		if r.Rules() != none || r.Skipped() != 1 {
			t.Errorf("hiding root's 0700 dir: %d rules (%d without it), %d skipped: want it left to the file permissions", r.Rules(), none, r.Skipped())
		}
		if out, code := run(t, r, "cat "+filepath.Join(etc, "gitlab-runner", "config.toml")); code == 0 || strings.Contains(out, "RUNNER-TOKEN") {
			t.Errorf("read root's config: exit %d: %s", code, out)
		}
		if out, code := run(t, r, "cat "+filepath.Join(etc, "f7")); code != 0 || !strings.Contains(out, "SIBLING") {
			t.Errorf("read a sibling: exit %d: %s", code, out)
		}

		own := filepath.Join(mine, "own")
		if err := os.Mkdir(own, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(own, "f"), []byte("OWN-SECRET\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(own, 0)
		defer os.Chmod(own, 0o700)
		r = build(own)
		if r.Skipped() != 0 || r.Rules() == none {
			t.Errorf("hiding the user's own mode-000 dir: %d rules, %d skipped: want a Landlock rule layout", r.Rules(), r.Skipped())
		}
		if out, code := run(t, r, "chmod 700 "+own+" && cat "+own+"/f"); code == 0 || strings.Contains(out, "OWN-SECRET") {
			t.Errorf("chmod back and read the user's own hidden dir: exit %d: %s", code, out)
		}
	})
}

// TestScopes: a sandboxed process cannot signal, ptrace or read the
// environment of a process outside its sandbox, but can its own children.
func TestScopes(t *testing.T) {
	abi := needLandlock(t)
	outside := exec.Command("sleep", "30")
	outside.Env = []string{"OUTSIDE_SECRET=hunter2"}
	if err := outside.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { outside.Process.Kill(); outside.Wait() }()
	pid := strconv.Itoa(outside.Process.Pid)
	r, err := Policy{Devices: []string{"/dev"}}.Build()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// Root's CAP_SYS_PTRACE still reads /proc/<pid>/environ past Landlock
	// on this kernel (mem and ptrace are refused): the runner user is not
	// root, and the end-to-end tests run as such a user.
	if os.Getuid() != 0 {
		out, code := run(t, r, "cat /proc/"+pid+"/environ")
		if code == 0 || strings.Contains(out, "hunter2") {
			t.Errorf("read /proc/%s/environ from the sandbox: exit %d: %q", pid, code, out)
		}
	}
	out, code := run(t, r, "head -c 16 /proc/"+pid+"/mem")
	if code == 0 {
		t.Errorf("read /proc/%s/mem from the sandbox: %q", pid, out)
	}
	if _, err := exec.LookPath("strace"); err == nil {
		// Attached, strace would run until timeout stops it (124).
		out, code = run(t, r, "timeout 10 strace -o /dev/null -p "+pid+" -e none")
		if code == 0 || !strings.Contains(out, "Operation not permitted") {
			t.Errorf("ptrace attach to an outside process: exit %d: %q", code, out)
		}
	}
	if abi >= 6 {
		out, code = run(t, r, "kill -TERM "+pid)
		if code == 0 {
			t.Errorf("signalled an outside process from the sandbox: %s", out)
		}
	}
	out, code = run(t, r, "sleep 30 & p=$!; tr '\\0' '\\n' < /proc/$p/environ >/dev/null && kill $p && wait $p; echo rc=$?")
	if code != 0 || !strings.Contains(out, "rc=143") {
		t.Errorf("own child: exit %d: %s", code, out)
	}
	time.Sleep(10 * time.Millisecond)
	if err := syscall.Kill(outside.Process.Pid, 0); err != nil {
		t.Errorf("outside process died: %v", err)
	}
}

// TestOnThreadLeavesProcessFree: after a restricted OnThread, ferry itself
// (other goroutines, later calls) is not restricted.
func TestOnThreadLeavesProcessFree(t *testing.T) {
	needLandlock(t)
	dir := t.TempDir()
	r, err := Policy{Hide: []string{dir}}.Build()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := 0; i < 20; i++ {
		if err := OnThread(r, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), []byte("x"), 0o600); err != nil {
			t.Fatalf("ferry restricted after OnThread: %v", err)
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	needLandlock(b)
	home, _ := os.UserHomeDir()
	p := Policy{Hide: []string{filepath.Join(home, ".ssh"), filepath.Join(home, ".ferry"), os.TempDir() + "/x"}, Devices: []string{"/dev"}, ReadWrite: []string{b.TempDir()}}
	var rules int
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		r, err := p.Build()
		if err != nil {
			b.Fatal(err)
		}
		rules = r.Rules()
		r.Close()
	}
	// CPU time too: on a loaded machine wall time mostly measures waiting.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(rules), "rules")
}

func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestRealPathsLikeEvalSymlinks: the build's memoised resolution gives what
// filepath.EvalSymlinks gives, path by path: symlinks at the end, in the
// middle, relative and chained, missing paths and paths through a file
// dropped.
func TestRealPathsLikeEvalSymlinks(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a/b/c", "x/y"} {
		os.MkdirAll(filepath.Join(root, d), 0o700)
	}
	os.WriteFile(filepath.Join(root, "a/file"), nil, 0o600)
	os.Symlink(filepath.Join(root, "x"), filepath.Join(root, "a/b/abs-link"))
	os.Symlink("../../x/y", filepath.Join(root, "a/b/rel-link"))
	os.Symlink("rel-link", filepath.Join(root, "a/b/chain"))
	os.Symlink(filepath.Join(root, "nowhere"), filepath.Join(root, "a/dangling"))
	in := []string{"/", root, root + "/a/b/c", root + "/a/b/abs-link", root + "/a/b/abs-link/y", root + "/a/b/rel-link",
		root + "/a/b/chain", root + "/a/b/chain/", root + "/a/./b/../b/c", root + "/a/missing", root + "/a/missing/deeper",
		root + "/a/file", root + "/a/file/under", root + "/a/dangling", root + "/a/b/c", "relative/path", ""}
	var want []string
	for _, p := range in {
		if p == "" || !filepath.IsAbs(p) {
			continue
		}
		if rp, err := filepath.EvalSymlinks(filepath.Clean(p)); err == nil {
			want = append(want, rp)
		}
	}
	got := (&builder{}).realPaths(in)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("realPaths:\n%s\nEvalSymlinks:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Ruleset.Real, after a build that looked up some of them, answers
	// the same for each path.
	if _, err := Probe(); err != nil {
		return
	}
	r, err := Policy{ReadOnly: in[:6], Hide: []string{root + "/a/missing"}}.Build()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, p := range in {
		if p == "" || !filepath.IsAbs(p) {
			continue
		}
		want, werr := filepath.EvalSymlinks(filepath.Clean(p))
		if got, ok := r.Real(p); ok != (werr == nil) || (ok && got != want) {
			t.Errorf("Real(%s) = %q %v, EvalSymlinks %q %v", p, got, ok, want, werr)
		}
	}
}
