package tmpns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
)

// A holder keeps one job's private /tmp for all its stages: prepare starts
// it (StartHolder) as a re-exec of ferry made like the per-stage one (new
// user+mount namespace, CAP_SYS_ADMIN there), which sets the mounts up
// once, then execs ferry again without any capability (the exec of a
// non-root uid drops them on every thread, which a Go program cannot do
// otherwise) and waits: for SIGTERM (cleanup), the runner's death or the
// job's deadline. Each stage enters its namespaces through EnterProgram
// (see OpenHeld). It holds the job's process mark, so cleanup and the
// sweep of dead runners' jobs find it like any leftover of the job.

// Files of a holder's directory (in the job's state dir: read-only to the
// job).
const (
	HoldPIDFile   = "holder.pid" // jobproc.WritePIDFile
	HoldPlanFile  = "plan"       // Plan of the holder's Spec, at prepare
	HoldLogFile   = "holder.log"
	HoldEnterFile = "enter" // EnterProgram
	// HoldStampFile is the stamp (sandbox.Stamp) of the Landlock ruleset
	// the holder keeps on HoldRulesetFD, when prepare gave it one.
	HoldStampFile = "ruleset.stamp"
)

// HoldRulesetFD is where the holder keeps the job's Landlock ruleset, for
// stages to take a copy of (HeldRuleset) instead of building it again.
const HoldRulesetFD = 5

const (
	holdArg     = "--hold"      // phase 1: make the mounts, exec holdWaitArg
	holdWaitArg = "--hold-wait" // phase 2: no capability, wait
)

// StartHolder starts self (ferry) as the holder of s's private /tmp,
// recording it in dir: its plan, then, once it is ready, its PID file. It
// ends on SIGTERM, when runner ends or at deadline; it holds mark (the
// job's process mark; nil: none) and ruleset (the job's Landlock ruleset,
// nil: none) on HoldRulesetFD. s.Argv and s.RulesetFD are ignored.
func StartHolder(self, dir string, s Spec, runner jobproc.Owner, deadline time.Time, mark, ruleset *os.File) error {
	plan, err := s.Plan()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("namespace holder: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, HoldPlanFile), []byte(plan), 0o600); err != nil {
		return fmt.Errorf("namespace holder: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, HoldLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("namespace holder: %w", err)
	}
	defer logf.Close()
	ready, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("namespace holder: %w", err)
	}
	defer ready.Close()
	s.RulesetFD, s.Argv = -1, nil
	args := append([]string{Subcommand, holdArg, strconv.Itoa(runner.PID) + ":" + strconv.FormatUint(runner.Start, 10),
		strconv.FormatInt(deadline.Unix(), 10)}, s.Args()[1:]...)
	cmd := exec.Command(self, args...)
	cmd.Args[0] = "ferry"
	// Nothing of the runner's conversation: the holder is no job process.
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{readyW}                    // fd 3: a byte once it is ready
	cmd.ExtraFiles = append(cmd.ExtraFiles, mark, ruleset) // fd 4, fd 5 (HoldRulesetFD): held, never read
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	SetSysProcAttr(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return fmt.Errorf("namespace holder: start: %w", err)
	}
	readyW.Close()
	go cmd.Wait() // reaped here while prepare lives, by its adopter after
	ready.SetReadDeadline(time.Now().Add(10 * time.Second))
	var one [1]byte
	if n, _ := ready.Read(one[:]); n != 1 {
		cmd.Process.Kill()
		msg, _ := os.ReadFile(filepath.Join(dir, HoldLogFile))
		return fmt.Errorf("namespace holder did not start: %s", lastLine(msg))
	}
	if err := jobproc.WritePIDFile(filepath.Join(dir, HoldPIDFile), cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("namespace holder: %w", err)
	}
	return nil
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		return "no reason given"
	}
	return s
}

// StopHolder ends the holder dir records, if it still runs (SIGTERM, then
// SIGKILL after wait), and removes its PID file.
func StopHolder(dir string, wait time.Duration) {
	p := filepath.Join(dir, HoldPIDFile)
	if pid, ok := jobproc.ReadPIDFile(p); ok {
		jobproc.Terminate(pid, wait)
	}
	os.Remove(p)
}

// Plan describes the mounts s makes: which of /tmp and /var/tmp get a
// private dir, which kept paths are bound back under them and the files
// bound over others, each with its device and inode. A stage enters the
// holder only if its own Spec's plan is the holder's: a kept directory
// made again since prepare is another inode, which the holder's namespace
// does not have.
func (s Spec) Plan() (string, error) { return s.PlanWith(nil) }

// Known answers for paths another lookup resolved already: a Landlock
// ruleset (sandbox.Ruleset) whose build or check looked up the same paths.
type Known interface {
	// Real resolves p like filepath.EvalSymlinks (false: unknown).
	Real(p string) (string, bool)
	// Inode is the device and inode of the resolved path p (false:
	// unknown).
	Inode(p string) (dev, ino uint64, ok bool)
}

// PlanWith is Plan asking known first (nil: nobody), then the file system.
func (s Spec) PlanWith(known Known) (string, error) {
	var b strings.Builder
	// One line each: kind, target, path, device:inode, tab-separated.
	id := func(kind, target, p string) error {
		if known != nil {
			if dev, ino, ok := known.Inode(p); ok {
				fmt.Fprintf(&b, "%s\t%s\t%s\t%d:%d\n", kind, target, p, dev, ino)
				return nil
			}
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return fmt.Errorf("private /tmp: %w", err)
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\t%d:%d\n", kind, target, p, st.Dev, st.Ino)
		return nil
	}
	// Every stage computes it: the kept paths share most of their
	// prefixes, resolved once each (filepath.EvalSymlinks on each path
	// was ~110 lstats a stage).
	r := resolver{cache: map[string]string{}, known: known}
	keep := map[string]bool{}
	for _, k := range s.Keep {
		if !filepath.IsAbs(k) {
			continue
		}
		if p, err := r.real(k); err == nil {
			keep[p] = true
		}
	}
	seen := map[string]bool{}
	for _, t := range [][2]string{{"/tmp", s.Tmp}, {"/var/tmp", s.VarTmp}} {
		target, err := r.real(t[0])
		if err != nil || seen[target] {
			continue
		}
		seen[target] = true
		if keep[target] {
			fmt.Fprintf(&b, "shared\t%s\n", target)
			continue
		}
		priv, err := r.real(t[1])
		if err != nil {
			return "", fmt.Errorf("private /tmp: %w", err)
		}
		if err := id("on", target, priv); err != nil {
			return "", err
		}
		for _, k := range minimal(keep, target) {
			if err := id("keep", target, k); err != nil {
				return "", err
			}
		}
	}
	for _, o := range s.Over {
		if err := id("over", o[1], o[0]); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

// resolver resolves absolute paths like filepath.EvalSymlinks, each
// parent directory once.
type resolver struct {
	cache map[string]string
	known Known
}

func (r resolver) real(p string) (string, error) {
	p = filepath.Clean(p)
	if p == "/" || !filepath.IsAbs(p) {
		return filepath.EvalSymlinks(p)
	}
	if v, ok := r.cache[p]; ok {
		return v, nil
	}
	if r.known != nil {
		if v, ok := r.known.Real(p); ok {
			return v, nil
		}
	}
	parent, err := r.real(filepath.Dir(p))
	if err != nil {
		return "", err
	}
	q := filepath.Join(parent, filepath.Base(p))
	fi, err := os.Lstat(q)
	if err != nil {
		return "", err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		if q, err = filepath.EvalSymlinks(q); err != nil {
			return "", err
		}
	}
	r.cache[p] = q
	return q, nil
}

// holdMain is the holder's first phase, in its new namespaces: args are
// RUNNER-PID:START DEADLINE, then Spec's flags.
func holdMain(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "ferry: namespace holder: usage")
		return 127
	}
	spec, _, err := parseArgs(args[2:], false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferry: namespace holder: %v\n", err)
		return 127
	}
	spec.RulesetFD = -1
	// Capabilities are per thread: the one that clears the ambient set
	// (setup) must be the one that execs.
	runtime.LockOSThread()
	if err := setup(spec); err != nil {
		fmt.Fprintf(os.Stderr, "ferry: namespace holder: private /tmp: %v\n", err)
		return 127
	}
	// The exec drops every capability (ambient ones were cleared by
	// setup): the holder waits with none, its mounts stay.
	argv := []string{"ferry", Subcommand, holdWaitArg, args[0], args[1]}
	err = syscall.Exec("/proc/self/exe", argv, []string{"PATH=/usr/local/bin:/usr/bin:/bin"})
	fmt.Fprintf(os.Stderr, "ferry: namespace holder: exec: %v\n", err)
	return 127
}

// holdWait is the holder's second phase: ready (a byte on fd 3), then wait.
func holdWait(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "ferry: namespace holder: usage")
		return 127
	}
	var runner jobproc.Owner
	pid, start, _ := strings.Cut(args[0], ":")
	runner.PID, _ = strconv.Atoi(pid)
	runner.Start, _ = strconv.ParseUint(start, 10, 64)
	secs, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferry: namespace holder: deadline %q\n", args[1])
		return 127
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithDeadline(ctx, time.Unix(secs, 0))
	defer cancel()
	go func() {
		if runner.WaitExit(ctx) {
			fmt.Fprintln(os.Stderr, "ferry: namespace holder: the runner process ended")
			cancel()
		}
	}()
	if _, err := unix.FcntlInt(HoldRulesetFD, unix.F_GETFD, 0); err == nil && runner.PID > 0 {
		// Stages take a copy of the ruleset with pidfd_getfd, which Yama
		// (ptrace_scope 1) allows only to a process's ancestors and the
		// descendants of the one it names: the runner, whose child each
		// stage's ferry is. Without Yama this fails, and is not needed.
		_ = unix.Prctl(unix.PR_SET_PTRACER, uintptr(runner.PID), 0, 0, 0)
	}
	ready := os.NewFile(3, "ready")
	ready.Write([]byte{1})
	ready.Close()
	<-ctx.Done()
	return 0
}
