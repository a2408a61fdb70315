package tmpns

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/asuser"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"gitlab.com/ferry-ci/ferry/pkg/sandbox"
)

// heldJob is one job's holder for the tests: its dirs and spec.
type heldJob struct {
	base, dir, priv, vpriv, keep string
	spec                         Spec
	plan                         string
	pid                          int
}

// startHeldJob starts a holder for a new job; ruleset (nil: none) gives
// the ruleset file the holder keeps, once the job's dirs exist.
func startHeldJob(t *testing.T, self string, runner jobproc.Owner, ruleset func(*heldJob) *os.File) *heldJob {
	t.Helper()
	base, err := os.MkdirTemp("/tmp", "ferry-tmpns-hold-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	j := &heldJob{base: base, dir: filepath.Join(base, "state"), priv: filepath.Join(base, "tmp"),
		vpriv: filepath.Join(base, "vartmp"), keep: filepath.Join(base, "keep")}
	for _, d := range []string{j.dir, j.priv, j.vpriv, j.keep} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(j.keep, "kept"), []byte("kept-content\n"), 0o600)
	j.spec = Spec{Tmp: j.priv, VarTmp: j.vpriv, Keep: []string{j.keep, j.dir}, RulesetFD: -1}
	if j.plan, err = j.spec.Plan(); err != nil {
		t.Fatal(err)
	}
	var rs *os.File
	if ruleset != nil {
		rs = ruleset(j)
	}
	if err := StartHolder(self, j.dir, j.spec, runner, time.Now().Add(time.Minute), nil, rs); err != nil {
		t.Fatal(err)
	}
	pid, ok := jobproc.ReadPIDFile(filepath.Join(j.dir, HoldPIDFile))
	if !ok {
		t.Fatal("no running holder after StartHolder")
	}
	j.pid = pid
	t.Cleanup(func() { StopHolder(j.dir, time.Second) })
	if err := WriteEnterProgram(filepath.Join(j.dir, HoldEnterFile)); err != nil {
		t.Fatal(err)
	}
	return j
}

// enter runs sh -c script in j's holder through EnterProgram, from a thread
// restricted by rs (nil: none), as a stage does.
func (j *heldJob) enter(t *testing.T, rs *sandbox.Ruleset, script string, env ...string) (string, error) {
	t.Helper()
	ns, err := OpenHeld(j.dir, j.plan)
	if err != nil {
		t.Fatalf("OpenHeld: %v", err)
	}
	defer ns.Close()
	cmd := exec.Command(filepath.Join(j.dir, HoldEnterFile), j.keep, "/bin/sh", "-c", script)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "KEEP=" + j.keep, "HOLDER=" + strconv.Itoa(j.pid)}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.ExtraFiles = make([]*os.File, jobproc.MarkFD-2)
	cmd.ExtraFiles[UserFD-3], cmd.ExtraFiles[MntFD-3] = ns.User, ns.Mnt
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	err = sandbox.OnThread(rs, cmd.Run)
	return out.String(), err
}

func waitGone(pid int, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !jobproc.Running(pid) {
			return true
		}
	}
	return !jobproc.Running(pid)
}

// TestHolderEnter, as an unprivileged user: a holder made at "prepare"
// gives two "stages", entered through EnterProgram from a Landlock-
// restricted thread, the same private /tmp (what the first wrote, the
// second reads; it lands in the job's dir, not the host's /tmp), the kept
// path at its own path and cwd, and no capability; another job's holder is
// never entered through a forged or stale PID file; the restricted job
// can neither enter nor signal its holder; the holder has no capability
// and ends with the runner and on StopHolder.
func TestHolderEnter(t *testing.T) {
	if !EnterSupported() {
		t.Skip("EnterProgram is x86-64 code")
	}
	asuser.Run(t, asuser.Spec{User: "ferry-tmpns-1"}, func(t *testing.T, _ asuser.Env) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if err := Probe(self); err != nil {
			t.Skipf("no private /tmp on this kernel: %v", err)
		}
		runner := exec.Command("sleep", "60")
		if err := runner.Start(); err != nil {
			t.Fatal(err)
		}
		defer runner.Process.Kill()
		go runner.Wait()
		st, err := jobproc.StartTime(runner.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		owner := jobproc.Owner{PID: runner.Process.Pid, Start: st}
		abi, err := sandbox.Probe()
		var rs *sandbox.Ruleset
		// Job a's holder keeps its ruleset, as prepare gives it.
		a := startHeldJob(t, self, owner, func(a *heldJob) *os.File {
			if err != nil {
				t.Logf("no Landlock (%v): entered unrestricted", err)
				return nil
			}
			rs, err = sandbox.Policy{Hide: []string{"/tmp", "/var/tmp"}, ReadWrite: []string{a.priv, a.vpriv},
				ReadOnly: []string{a.keep, a.dir}, Devices: []string{"/dev"}}.Build()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rs.Close() })
			return os.NewFile(uintptr(rs.FD()), "ruleset")
		})
		b := startHeldJob(t, self, jobproc.Owner{}, nil)

		status, _ := os.ReadFile("/proc/" + strconv.Itoa(a.pid) + "/status")
		if !strings.Contains(string(status), "CapEff:\t0000000000000000\n") || !strings.Contains(string(status), "CapPrm:\t0000000000000000\n") {
			t.Errorf("the holder keeps capabilities:\n%s", status)
		}
		out, err := a.enter(t, rs, `echo one > /tmp/x && echo v > /var/tmp/y && cat "$KEEP/kept" && pwd
grep ^CapEff /proc/self/status
if [ -e "$OTHER" ]; then echo OTHER-VISIBLE; fi
if umount /tmp 2>/dev/null; then echo UMOUNT-WORKED; fi
if readlink /proc/$HOLDER/ns/mnt >/dev/null 2>&1; then echo HOLDER-NS-OPENED; fi
if ls /proc/$HOLDER/root/ >/dev/null 2>&1; then echo HOLDER-ROOT-OPENED; fi
if command -v nsenter >/dev/null && nsenter -t $HOLDER -U -m true 2>/dev/null; then echo NSENTER-WORKED; fi
if kill -0 $HOLDER 2>/dev/null; then echo HOLDER-SIGNALLED; fi`, "OTHER="+b.priv)
		if err != nil {
			t.Fatalf("stage 1: %v\n%s", err, out)
		}
		t.Logf("stage 1 (Landlock ABI %d):\n%s", abi, out)
		for _, want := range []string{"kept-content\n", a.keep + "\n", "CapEff:\t0000000000000000\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("stage 1 output lacks %q", want)
			}
		}
		bad := []string{"OTHER-VISIBLE", "UMOUNT-WORKED"}
		if rs != nil {
			bad = append(bad, "HOLDER-NS-OPENED", "HOLDER-ROOT-OPENED", "NSENTER-WORKED")
			if abi >= 6 {
				bad = append(bad, "HOLDER-SIGNALLED")
			}
		}
		for _, s := range bad {
			if strings.Contains(out, s) {
				t.Errorf("%s", s)
			}
		}
		if got, _ := os.ReadFile(filepath.Join(a.priv, "x")); string(got) != "one\n" {
			t.Errorf("the job's tmp dir holds %q, want the stage's write", got)
		}
		if got, _ := os.ReadFile("/tmp/x"); string(got) == "one\n" {
			t.Errorf("the write reached the host's /tmp")
		}
		// Stage 2 takes its ruleset from the holder, as stages do.
		held := rs
		if rs != nil {
			h, err := OpenHolder(a.dir, a.priv)
			if err != nil {
				t.Fatalf("OpenHolder: %v", err)
			}
			fd, err := h.Ruleset()
			h.Close()
			if err != nil {
				t.Fatalf("the holder's ruleset: %v", err)
			}
			if held, err = sandbox.Adopt(fd, abi, sandbox.Lookups{}); err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			if out, _ := a.enter(t, held, `if readlink /proc/$HOLDER/ns/mnt >/dev/null 2>&1; then echo HOLDER-NS-OPENED; fi`); strings.Contains(out, "HOLDER-NS-OPENED") {
				t.Errorf("under the holder's ruleset the job opened its namespaces:\n%s", out)
			}
			if h, err := OpenHolder(b.dir, b.priv); err != nil {
				t.Errorf("OpenHolder of job b: %v", err)
			} else {
				// Its fd 5 is closed at start, then some descriptor
				// of its own: never taken for a ruleset.
				if fd, err := h.Ruleset(); err == nil {
					if rs, err := sandbox.Adopt(fd, abi, sandbox.Lookups{}); err == nil {
						rs.Close()
						t.Errorf("job b's holder keeps no ruleset, yet one was adopted from it")
					}
				}
				h.Close()
			}
		}
		out, err = a.enter(t, held, `cat /tmp/x /var/tmp/y`)
		if err != nil || out != "one\nv\n" {
			t.Errorf("stage 2 sees %q (%v), want what stage 1 wrote", out, err)
		}
		out, err = b.enter(t, nil, `cat /tmp/x 2>&1 || echo NOT-THERE`)
		if err != nil || !strings.Contains(out, "NOT-THERE") {
			t.Errorf("another job's stage sees %q (%v)", out, err)
		}

		// A forged PID file naming job b's holder, with its right start
		// time; then one naming another process of the same user (the
		// runner here), as a stale one whose pid was reused would.
		pidFile := filepath.Join(a.dir, HoldPIDFile)
		good, _ := os.ReadFile(pidFile)
		other, _ := os.ReadFile(filepath.Join(b.dir, HoldPIDFile))
		rst, _ := jobproc.StartTime(runner.Process.Pid)
		stale := []byte(strconv.Itoa(runner.Process.Pid) + " " + strconv.FormatUint(rst, 10) + "\n")
		for _, c := range []struct {
			name string
			pid  []byte
		}{{"job b's holder", other}, {"a stale PID file (another process's pid)", stale}} {
			os.WriteFile(pidFile, c.pid, 0o600)
			if ns, err := OpenHeld(a.dir, a.plan); err == nil {
				ns.Close()
				t.Errorf("job a's stage would enter %s", c.name)
			} else {
				t.Logf("%s: %v", c.name, err)
			}
			if h, err := OpenHolder(a.dir, a.priv); err == nil {
				h.Close()
				t.Errorf("job a's stage would take %s for its holder", c.name)
			}
		}
		os.WriteFile(pidFile, good, 0o600)
		// A plan that changed (a kept dir made again) is not entered.
		if ns, err := OpenHeld(a.dir, strings.Replace(a.plan, "keep", "keep\t", 1)); err == nil {
			ns.Close()
			t.Errorf("a stage whose plan differs entered the holder")
		}

		// The runner ends: a's holder follows. StopHolder ends b's.
		runner.Process.Kill()
		if !waitGone(a.pid, 5*time.Second) {
			t.Errorf("the holder outlived its runner by 5 s")
		}
		StopHolder(b.dir, time.Second)
		if !waitGone(b.pid, 2*time.Second) {
			t.Errorf("StopHolder left the holder running")
		}
	})
}

// TestEnterProgramFailsCleanly: without the namespace descriptors the
// program says which step failed and exits with 127, running nothing.
func TestEnterProgramFailsCleanly(t *testing.T) {
	if !EnterSupported() {
		t.Skip("EnterProgram is x86-64 code")
	}
	p := filepath.Join(t.TempDir(), "enter")
	if err := WriteEnterProgram(p); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "/", "/bin/echo", "RAN").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 127 || strings.Contains(string(out), "RAN") || !strings.Contains(string(out), "user namespace") {
		t.Fatalf("got %v %q, want exit 127 naming the user namespace", err, out)
	}
	t.Logf("%d bytes; %s", len(EnterProgram()), out)
}

// TestResolverLikeEvalSymlinks: Plan's resolver gives filepath.EvalSymlinks'
// answers (links to dirs, relative and absolute, chains, missing paths).
func TestResolverLikeEvalSymlinks(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "a/b/c"), 0o700)
	os.Symlink("a/b", filepath.Join(d, "rel"))
	os.Symlink(filepath.Join(d, "a"), filepath.Join(d, "abs"))
	os.Symlink("../rel", filepath.Join(d, "a/up"))
	os.Symlink(filepath.Join(d, "abs/up"), filepath.Join(d, "chain"))
	r := resolver{cache: map[string]string{}}
	for _, p := range []string{d, d + "/a/b/c", d + "/rel/c", d + "/abs/b", d + "/a/up/c", d + "/chain/c", d + "/missing", d + "/rel/missing", "/tmp", "/var/tmp", "/"} {
		want, werr := filepath.EvalSymlinks(p)
		got, gerr := r.real(p)
		if got != want || (werr == nil) != (gerr == nil) {
			t.Errorf("%s: %q %v, EvalSymlinks %q %v", p, got, gerr, want, werr)
		}
	}
}

// TestTryEnterProgram: the program runs from an ordinary dir; from a
// noexec filesystem (where every stage's exec of it would fail) prepare's
// check refuses it, and the stages use the re-exec.
func TestTryEnterProgram(t *testing.T) {
	if !EnterSupported() {
		t.Skip("EnterProgram is x86-64 code")
	}
	ok := filepath.Join(t.TempDir(), "enter")
	if err := WriteEnterProgram(ok); err != nil {
		t.Fatal(err)
	}
	if err := TryEnterProgram(ok); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() != 0 {
		t.Skip("the noexec case mounts a tmpfs: needs root")
	}
	d := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "noexec,size=1m", "tmpfs", d).CombinedOutput(); err != nil {
		t.Skipf("mount: %v %s", err, out)
	}
	defer exec.Command("umount", d).Run()
	bad := filepath.Join(d, "enter")
	if err := WriteEnterProgram(bad); err != nil {
		t.Fatal(err)
	}
	err := TryEnterProgram(bad)
	if err == nil {
		t.Fatal("TryEnterProgram accepted a program on a noexec filesystem")
	}
	t.Logf("noexec: %v", err)
}
