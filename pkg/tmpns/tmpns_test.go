package tmpns

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/asuser"
)

// TestMain plays the re-exec when the test binary is started as ferry's
// Subcommand (Probe and the tests below start it so).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Subcommand {
		os.Exit(Main(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestKnobs: each setting that forbids unprivileged user namespaces is
// read and explained; values that allow them, and missing files (kernels
// without the setting), are not taken for a refusal.
func TestKnobs(t *testing.T) {
	for _, c := range []struct {
		files  map[string]string
		forbid []string
	}{
		{map[string]string{}, nil},
		{map[string]string{"kernel/unprivileged_userns_clone": "1\n", "user/max_user_namespaces": "63000\n", "kernel/apparmor_restrict_unprivileged_userns": "0\n"}, nil},
		{map[string]string{"kernel/unprivileged_userns_clone": "0\n"}, []string{"kernel.unprivileged_userns_clone=0"}},
		{map[string]string{"user/max_user_namespaces": "0\n"}, []string{"user.max_user_namespaces=0"}},
		{map[string]string{"kernel/apparmor_restrict_unprivileged_userns": "1\n"}, []string{"kernel.apparmor_restrict_unprivileged_userns=1"}},
	} {
		root := t.TempDir()
		for rel, v := range c.files {
			os.MkdirAll(filepath.Dir(filepath.Join(root, rel)), 0o755)
			if err := os.WriteFile(filepath.Join(root, rel), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for _, k := range Knobs(root) {
			if k.Forbids {
				got = append(got, k.Why)
			}
		}
		if len(got) != len(c.forbid) {
			t.Errorf("%v: forbidding %q, want %q", c.files, got, c.forbid)
			continue
		}
		for i := range got {
			if !strings.HasPrefix(got[i], c.forbid[i]) {
				t.Errorf("%v: %q, want it to name %s", c.files, got[i], c.forbid[i])
			}
		}
	}
}

// TestProbeMatchesKernelKnobs reads this host's own settings (the sysctl
// files under /proc/sys Probe reads) and, as an unprivileged user, checks
// that Probe's answer agrees: refused, naming the setting, when one forbids
// it; possible when none does and the kernel lets this user make one
// (unshare(1) says, independently of ferry's code).
func TestProbeMatchesKernelKnobs(t *testing.T) {
	asuser.Run(t, asuser.Spec{User: "ferry-tmpns-1"}, func(t *testing.T, _ asuser.Env) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		var forbid []string
		for _, k := range Knobs("/proc/sys") {
			t.Logf("%s = %q", k.Path, k.Value)
			if k.Forbids {
				forbid = append(forbid, k.Why)
			}
		}
		perr := Probe(self)
		t.Logf("Probe: %v", perr)
		if len(forbid) > 0 {
			if perr == nil || !strings.Contains(perr.Error(), forbid[0]) {
				t.Fatalf("a setting forbids it (%s), Probe says %v", forbid[0], perr)
			}
			return
		}
		out, uerr := exec.Command("unshare", "--user", "--map-current-user", "--mount", "true").CombinedOutput()
		if uerr != nil {
			t.Logf("unshare: %v %s", uerr, out)
		}
		if (uerr == nil) != (perr == nil) {
			t.Fatalf("unshare(1) says %v, Probe says %v", uerr, perr)
		}
	})
}

// TestPrivateTmp runs a program through the re-exec, as an unprivileged
// user: its /tmp and /var/tmp are the given dirs (a write there lands in
// them, not in the host's), a kept path under /tmp is there at its own
// path, the host's other /tmp entries are not visible, and the program
// has no capability left.
func TestPrivateTmp(t *testing.T) {
	asuser.Run(t, asuser.Spec{User: "ferry-tmpns-1"}, func(t *testing.T, _ asuser.Env) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if err := Probe(self); err != nil {
			t.Skipf("no private /tmp on this kernel: %v (TestProbeMatchesKernelKnobs checks the reason)", err)
		}
		base, err := os.MkdirTemp("/tmp", "ferry-tmpns-test-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(base)
		other, err := os.MkdirTemp("/tmp", "ferry-tmpns-other-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(other)
		priv, vpriv, keep := filepath.Join(base, "tmp"), filepath.Join(base, "vartmp"), filepath.Join(base, "keep")
		for _, d := range []string{priv, vpriv, keep} {
			os.Mkdir(d, 0o700)
		}
		os.WriteFile(filepath.Join(keep, "kept"), []byte("kept-content\n"), 0o600)
		script := `echo in-ns > /tmp/x && echo var > /var/tmp/y && cat /tmp/x && cat "$KEEP/kept" &&
if [ -e "$OTHER" ]; then echo OTHER-VISIBLE; fi
grep ^CapEff /proc/self/status
if umount /tmp 2>/dev/null; then echo UMOUNT-WORKED; fi`
		cmd := exec.Command(self, Spec{Tmp: priv, VarTmp: vpriv, Keep: []string{keep}, RulesetFD: -1, Argv: []string{"/bin/sh", "-c", script}}.Args()...)
		cmd.Env = []string{"KEEP=" + keep, "OTHER=" + other, "PATH=/usr/bin:/bin"}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		SetSysProcAttr(cmd.SysProcAttr)
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		got := out.String()
		for _, want := range []string{"in-ns\n", "kept-content\n", "CapEff:\t0000000000000000\n"} {
			if !strings.Contains(got, want) {
				t.Errorf("output lacks %q:\n%s", want, got)
			}
		}
		for _, bad := range []string{"OTHER-VISIBLE", "UMOUNT-WORKED"} {
			if strings.Contains(got, bad) {
				t.Errorf("%s:\n%s", bad, got)
			}
		}
		if b, err := os.ReadFile(filepath.Join(priv, "x")); err != nil || string(b) != "in-ns\n" {
			t.Errorf("the private /tmp/x: %q %v", b, err)
		}
		if b, err := os.ReadFile(filepath.Join(vpriv, "y")); err != nil || string(b) != "var\n" {
			t.Errorf("the private /var/tmp/y: %q %v", b, err)
		}
		if _, err := os.Stat("/tmp/x"); err == nil {
			if b, _ := os.ReadFile("/tmp/x"); string(b) == "in-ns\n" {
				t.Errorf("the write reached the host's /tmp/x")
			}
		}
	})
}

// TestProbeAsRunnerUser: root's `ferry check` probes as the runner user.
// ProbeAs agrees with unshare(1) run as that user, and it really runs as
// the user: a copy of ferry only root may execute cannot probe.
func TestProbeAsRunnerUser(t *testing.T) {
	uid, gid := asuser.User(t, "ferry-tmpns-1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	copyTo := func(mode os.FileMode) string {
		d, err := os.MkdirTemp("", "ferry-probeas-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "ferry")
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	perr := ProbeAs(copyTo(0o755), uid, gid)
	t.Logf("ProbeAs: %v", perr)
	unshare := exec.Command("unshare", "--user", "--map-current-user", "--mount", "true")
	unshare.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
	out, uerr := unshare.CombinedOutput()
	if uerr != nil {
		t.Logf("unshare as uid %d: %v %s", uid, uerr, out)
	}
	if (uerr == nil) != (perr == nil) {
		t.Fatalf("unshare(1) as the user says %v, ProbeAs says %v", uerr, perr)
	}
	if err := ProbeAs(copyTo(0o700), uid, gid); err == nil {
		t.Fatal("ProbeAs succeeded with a ferry only root can execute: it did not run as the user")
	} else if !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("want a permission error, got %v", err)
	}
}
