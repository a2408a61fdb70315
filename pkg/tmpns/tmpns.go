// Package tmpns gives a job's shell a private /tmp and /var/tmp: ferry
// starts the shell through a re-exec of itself (Subcommand) in a new user
// and mount namespace, with the runner's uid and gid mapped to themselves.
// That process makes every mount private to the namespace, binds a per-job
// directory on /tmp and another on /var/tmp, binds back at their own paths
// the job's directories that lie under them (its runner temp dir, state,
// builds dir, ...), restricts itself with the Landlock ruleset ferry built
// and handed over as a descriptor, and execs the shell.
//
// A Go process is multithreaded, so unshare(CLONE_NEWUSER) is impossible in
// ferry itself: the namespaces are made by clone(2) for the new process. The
// re-exec keeps CAP_SYS_ADMIN over its own namespace as an ambient
// capability until it has mounted, then clears it: the shell runs as the
// runner user with no capability at all, and Landlock forbids every mount
// change to it anyway, so the job cannot unmount its /tmp to see the
// host's. No PID namespace: the job's processes stay ferry's descendants in
// the host's /proc, so ferry's signals, reaping and marks work unchanged.
//
// Probe tries it once (prepare does, and says in the job log which mode the
// job runs in); Knobs reads the kernel settings that forbid it, to say why.
package tmpns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/sandbox"
)

// Subcommand is the hidden ferry subcommand of the re-exec.
const Subcommand = "__tmpns-exec"

// Knob is a kernel setting that decides whether an unprivileged process may
// make a user namespace.
type Knob struct {
	// Path is the file under /proc/sys.
	Path string
	// Value is its content, trimmed ("" when the kernel has no such file).
	Value string
	// Forbids says the value refuses unprivileged user namespaces.
	Forbids bool
	// Why explains a forbidding value, naming the sysctl.
	Why string
}

// knobSpecs are the settings Knobs reads: Debian's and Ubuntu's older
// kernels' switch, the namespace limit, and Ubuntu 24.04's AppArmor
// restriction (namespaces can be made, but without capabilities in them
// unless an AppArmor profile grants `userns`).
var knobSpecs = []struct {
	rel, sysctl string
	forbids     func(v string) bool
	why         string
}{
	{"kernel/unprivileged_userns_clone", "kernel.unprivileged_userns_clone", func(v string) bool { return v == "0" },
		"kernel.unprivileged_userns_clone=0 forbids unprivileged user namespaces"},
	{"user/max_user_namespaces", "user.max_user_namespaces", func(v string) bool { return v == "0" },
		"user.max_user_namespaces=0 forbids user namespaces"},
	{"kernel/apparmor_restrict_unprivileged_userns", "kernel.apparmor_restrict_unprivileged_userns", func(v string) bool { return v == "1" },
		"kernel.apparmor_restrict_unprivileged_userns=1 (Ubuntu 23.10+) denies capabilities in unprivileged user namespaces unless an AppArmor profile for ferry allows `userns`"},
}

// Knobs reads the kernel's user-namespace settings under procSys
// (/proc/sys on a real host).
func Knobs(procSys string) []Knob {
	var out []Knob
	for _, k := range knobSpecs {
		p := filepath.Join(procSys, k.rel)
		b, err := os.ReadFile(p)
		v := strings.TrimSpace(string(b))
		if err != nil {
			v = ""
		}
		kn := Knob{Path: p, Value: v}
		if v != "" && k.forbids(v) {
			kn.Forbids, kn.Why = true, k.why
		}
		out = append(out, kn)
	}
	return out
}

// Probe reports whether this process can start a program in a private /tmp:
// nil, or why not. It starts self (ferry's own binary) in a new user and
// mount namespace and has it make a bind mount there, the way a job's
// shell is started: a kernel setting can allow the namespace but deny the
// mount (Ubuntu's AppArmor restriction), so only trying tells. The
// settings Knobs reads explain a failure.
func Probe(self string) error {
	cmd := exec.Command(self, Subcommand, "--probe")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	SetSysProcAttr(cmd.SysProcAttr)
	return runProbe(cmd, true)
}

// ProbeAs is Probe for the user uid:gid, for root's `ferry check`: it starts
// self as that user (no namespace yet), which then runs Probe itself. The
// namespace must be made by the user, not by root on its behalf: the
// kernel (and Ubuntu's AppArmor restriction) judges who creates it, and
// root may where the runner user may not.
func ProbeAs(self string, uid, gid int) error {
	cmd := exec.Command(self, Subcommand, probeAsArg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
	return runProbe(cmd, false) // the child's Probe explained it
}

// probeAsArg makes the re-exec run Probe (ProbeAs's child).
const probeAsArg = "--probe-as-me"

// runProbe runs a probe command with nothing of ferry's environment and
// bounded, and returns why it failed (its stderr, explained by the kernel
// settings that forbid namespaces when explain) or nil.
func runProbe(cmd *exec.Cmd, explain bool) error {
	cmd.Env = []string{}
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Start()
	if err == nil {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			err = errors.New("timed out")
		}
	}
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(stderr.String())
	if msg == "" {
		msg = err.Error()
	}
	if !explain {
		return errors.New(msg)
	}
	var why []string
	for _, k := range Knobs("/proc/sys") {
		if k.Forbids {
			why = append(why, k.Why)
		}
	}
	if len(why) > 0 {
		return fmt.Errorf("%s (%s)", strings.Join(why, "; "), msg)
	}
	return fmt.Errorf("an unprivileged user+mount namespace: %s", msg)
}

// SetSysProcAttr makes the process a's command starts in a new user and
// mount namespace, the caller's uid and gid mapped to themselves, with
// CAP_SYS_ADMIN over its namespace (ambient: it survives the exec of
// ferry, which drops it before the job's shell).
func SetSysProcAttr(a *syscall.SysProcAttr) {
	uid, gid := os.Getuid(), os.Getgid()
	a.Cloneflags |= syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS
	a.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
	a.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	a.GidMappingsEnableSetgroups = false
	a.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN}
}

// Spec is what the re-exec does before it execs the job's shell.
type Spec struct {
	// Tmp and VarTmp are the job's own directories bound on /tmp and
	// /var/tmp.
	Tmp, VarTmp string
	// Keep are paths (directories or files) that stay reachable at their
	// own path when they lie under /tmp or /var/tmp; others are ignored.
	Keep []string
	// Over are files or directories bound over others (Over[i][0] on
	// Over[i][1]) anywhere: copies, owned by the runner user, of root's
	// files that tools check the owner of. In the namespace every uid but
	// the runner's shows as nobody (65534), and ssh refuses an included
	// config file owned by anyone but root or the user.
	Over [][2]string
	// RulesetFD is the descriptor number, in the new process, of the
	// Landlock ruleset to restrict the shell with; negative: none.
	RulesetFD int
	// Argv is the program to exec (an absolute path) and its arguments.
	Argv []string
}

// Args is the command line of the re-exec of self for s.
func (s Spec) Args() []string {
	a := []string{Subcommand, "--tmp", s.Tmp, "--var-tmp", s.VarTmp, "--ruleset-fd", strconv.Itoa(s.RulesetFD)}
	for _, k := range s.Keep {
		a = append(a, "--keep", k)
	}
	for _, o := range s.Over {
		a = append(a, "--over-src", o[0], "--over-dst", o[1])
	}
	return append(append(a, "--"), s.Argv...)
}

func parseArgs(args []string, needArgv bool) (Spec, bool, error) {
	s := Spec{RulesetFD: -1}
	for len(args) > 0 {
		a := args[0]
		if a == "--probe" {
			return s, true, nil
		}
		if a == "--" {
			s.Argv = args[1:]
			break
		}
		if len(args) < 2 {
			return s, false, fmt.Errorf("%s needs a value", a)
		}
		v := args[1]
		switch a {
		case "--tmp":
			s.Tmp = v
		case "--var-tmp":
			s.VarTmp = v
		case "--keep":
			s.Keep = append(s.Keep, v)
		case "--over-src":
			s.Over = append(s.Over, [2]string{v, ""})
		case "--over-dst":
			if len(s.Over) == 0 || s.Over[len(s.Over)-1][1] != "" {
				return s, false, errors.New("--over-dst without --over-src")
			}
			s.Over[len(s.Over)-1][1] = v
		case "--ruleset-fd":
			n, err := strconv.Atoi(v)
			if err != nil {
				return s, false, fmt.Errorf("--ruleset-fd %q", v)
			}
			s.RulesetFD = n
		default:
			return s, false, fmt.Errorf("unknown argument %q", a)
		}
		args = args[2:]
	}
	if (needArgv && (len(s.Argv) == 0 || !filepath.IsAbs(s.Argv[0]))) || s.Tmp == "" || s.VarTmp == "" {
		return s, false, errors.New("usage: " + Subcommand + " --tmp DIR --var-tmp DIR [--keep PATH]... [--ruleset-fd N] -- /abs/program [args]")
	}
	return s, false, nil
}

// Main is the re-exec: it runs in the new namespaces, sets up the mounts,
// restricts itself and execs the job's shell. It returns only on failure
// (exit code 127 with the reason on stderr, which ferry shows in the job
// log: nothing of the job has run then).
func Main(args []string) int {
	if len(args) == 1 && args[0] == probeAsArg {
		self, err := os.Executable()
		if err == nil {
			err = Probe(self)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	if len(args) > 0 && args[0] == holdArg {
		return holdMain(args[1:])
	}
	if len(args) > 0 && args[0] == holdWaitArg {
		return holdWait(args[1:])
	}
	spec, probe, err := parseArgs(args, true)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferry %s: %v\n", Subcommand, err)
		return 127
	}
	// Capabilities, no_new_privs and Landlock are per thread: all of it
	// is done on this one, which then execs.
	runtime.LockOSThread()
	if probe {
		if err := probeMount(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	if err := setup(spec); err != nil {
		fmt.Fprintf(os.Stderr, "ferry: private /tmp: %v\n", err)
		return 127
	}
	err = syscall.Exec(spec.Argv[0], spec.Argv, os.Environ())
	fmt.Fprintf(os.Stderr, "ferry: exec %s: %v\n", spec.Argv[0], err)
	return 127
}

// probeMount does what setup needs: a private mount tree and a bind mount.
func probeMount() error {
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("mount --make-rprivate /: %w", err)
	}
	d, err := os.MkdirTemp("", "ferry-tmpns-probe-")
	if err != nil {
		d = "/"
	} else {
		defer os.Remove(d)
	}
	if err := unix.Mount(d, d, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount: %w", err)
	}
	return nil
}

// bind is one bind mount, its source and target held open (O_PATH) before
// any mount changes what a path names.
type bind struct {
	src, dst     string
	srcFD, dstFD int
}

func setup(s Spec) error {
	cwd, _ := os.Getwd()
	var binds []bind
	defer func() {
		for _, b := range binds {
			unix.Close(b.srcFD)
			unix.Close(b.dstFD)
		}
	}()
	add := func(src, dst string) error {
		sfd, err := unix.Open(src, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", src, err)
		}
		dfd, err := unix.Open(dst, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(sfd)
			return fmt.Errorf("open %s: %w", dst, err)
		}
		binds = append(binds, bind{src, dst, sfd, dfd})
		return nil
	}
	for _, o := range s.Over {
		if o[0] == "" || o[1] == "" {
			return errors.New("--over-src without --over-dst")
		}
		if err := add(o[0], o[1]); err != nil {
			return err
		}
	}
	keep := realKeeps(s.Keep)
	var tops []bind
	seen := map[string]bool{}
	for _, t := range [][2]string{{"/tmp", s.Tmp}, {"/var/tmp", s.VarTmp}} {
		target, err := filepath.EvalSymlinks(t[0])
		if err != nil || seen[target] {
			continue // no /var/tmp, or a link to /tmp
		}
		seen[target] = true
		if keep[target] {
			continue // the admin shares it with every job (--sandbox-writable)
		}
		priv, err := filepath.EvalSymlinks(t[1])
		if err != nil {
			return fmt.Errorf("%s: %w", t[1], err)
		}
		for _, k := range minimal(keep, target) {
			rel, _ := filepath.Rel(target, k)
			dst := filepath.Join(priv, rel)
			if err := mountpoint(k, dst); err != nil {
				return err
			}
			if err := add(k, dst); err != nil {
				return err
			}
		}
		n := len(binds)
		if err := add(priv, target); err != nil {
			return err
		}
		// The private dirs go on last: a kept path may lie under the
		// other one's target.
		tops = append(tops, binds[n])
		binds = binds[:n]
	}
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("mount --make-rprivate /: %w", err)
	}
	for _, b := range append(binds, tops...) {
		if err := unix.Mount(fdPath(b.srcFD), fdPath(b.dstFD), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", b.src, b.dst, err)
		}
	}
	binds = append(binds, tops...)
	if cwd != "" {
		_ = os.Chdir(cwd) // through the new mounts
	}
	// No capability goes past the exec: the shell runs as the runner
	// user with none, in its namespace too.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if s.RulesetFD >= 0 {
		if err := sandbox.RestrictThread(s.RulesetFD); err != nil {
			return err
		}
		unix.Close(s.RulesetFD)
	}
	return nil
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// realKeeps resolves the kept paths (missing ones are dropped).
func realKeeps(in []string) map[string]bool {
	out := map[string]bool{}
	for _, k := range in {
		if !filepath.IsAbs(k) {
			continue
		}
		if r, err := filepath.EvalSymlinks(k); err == nil {
			out[r] = true
		}
	}
	return out
}

// minimal lists the kept paths strictly under target, without those inside
// another listed one (a recursive bind carries them along).
func minimal(keep map[string]bool, target string) []string {
	var in []string
	for k := range keep {
		if strings.HasPrefix(k, target+"/") {
			in = append(in, k)
		}
	}
	sort.Strings(in)
	var out []string
	for _, k := range in {
		if len(out) > 0 && strings.HasPrefix(k, out[len(out)-1]+"/") {
			continue
		}
		out = append(out, k)
	}
	return out
}

// mountpoint makes dst, where src is bound: a directory or an empty file
// like src, with its parents.
func mountpoint(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		if err := os.MkdirAll(dst, 0o700); err != nil {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}
