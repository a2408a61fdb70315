package tmpns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/elfexec"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
)

// Entering a holder's namespaces (Hold) costs a stage one tiny exec instead
// of ferry's re-exec (12 MB, ~1.7 ms of package init before it does
// anything, 5 to 9 ms a stage in all): ferry opens the holder's
// /proc/<pid>/ns/user and /proc/<pid>/ns/mnt, hands them to EnterProgram
// on UserFD and MntFD, and starts it from the thread Landlock restricted
// with the job's ruleset. The program is single-threaded (setns into a
// user namespace needs that, which no Go program is):
//
//	setns(UserFD, CLONE_NEWUSER)  ; the runner uid owns the holder's
//	                              ; namespace: full capabilities in it
//	setns(MntFD, CLONE_NEWNS)     ; the holder's mounts; cwd and root reset
//	close(UserFD); close(MntFD)
//	chdir(argv[1])
//	execve(argv[2], &argv[2], envp) ; a non-zero uid: every capability goes
//
// and on any failure writes one line naming the step to fd 2 and exits
// with 127. Landlock's domain is the thread's, inherited, and works on
// inodes: it applies in the namespace as it does outside; no_new_privs is
// already set by the restriction. The job itself cannot open another
// process's namespace files: Landlock scopes ptrace (which that open
// checks) to the job's own domain.

// Descriptor numbers of the holder's namespaces in EnterProgram: below
// the job's mark and the re-exec's ruleset (jobproc.MarkFD and the one
// below it).
const (
	UserFD = jobproc.MarkFD - 2
	MntFD  = jobproc.MarkFD - 3
)

// EnterSupported says whether EnterProgram runs on this machine (its code
// is x86-64 only).
func EnterSupported() bool { return runtime.GOARCH == "amd64" }

// EnterProgram is the static x86-64 ELF executable described above.
func EnterProgram() []byte {
	var code []byte
	emit := func(b ...byte) { code = append(code, b...) }
	u32 := func(v uint32) { code = binary.LittleEndian.AppendUint32(code, v) }
	type fixup struct {
		at     int // offset of a rel32 in code
		target string
	}
	var fix []fixup
	rel := func(target string) { fix = append(fix, fixup{len(code), target}); u32(0) }
	labels := map[string]int{}

	emit(0x48, 0x89, 0xe3) // mov rbx, rsp: argc, argv..., 0, envp...
	for _, s := range []struct {
		fd   int
		flag uint32
		fail string
	}{{UserFD, unix.CLONE_NEWUSER, "user"}, {MntFD, unix.CLONE_NEWNS, "mnt"}} {
		emit(0xb8)
		u32(unix.SYS_SETNS) // mov eax, SYS_setns
		emit(0xbf)
		u32(uint32(s.fd)) // mov edi, fd
		emit(0xbe)
		u32(s.flag)      // mov esi, flag
		emit(0x0f, 0x05) // syscall
		emit(0x85, 0xc0) // test eax, eax
		emit(0x0f, 0x85) // jnz fail
		rel(s.fail)      //
	}
	for _, fd := range []int{UserFD, MntFD} {
		emit(0xb8)
		u32(unix.SYS_CLOSE) // mov eax, SYS_close
		emit(0xbf)
		u32(uint32(fd))  // mov edi, fd
		emit(0x0f, 0x05) // syscall
	}
	emit(0x4c, 0x8b, 0x23)       // mov r12, [rbx]: argc (syscall keeps r12)
	emit(0x49, 0x83, 0xfc, 0x03) // cmp r12, 3
	emit(0x0f, 0x82)             // jb usage
	rel("usage")                 //
	emit(0xb8)
	u32(unix.SYS_CHDIR)          // mov eax, SYS_chdir
	emit(0x48, 0x8b, 0x7b, 0x10) // mov rdi, [rbx+16]: argv[1]
	emit(0x0f, 0x05)             // syscall
	emit(0x85, 0xc0)             // test eax, eax
	emit(0x0f, 0x85)             // jnz chdir
	rel("chdir")                 //
	emit(0xb8)
	u32(unix.SYS_EXECVE)               // mov eax, SYS_execve
	emit(0x48, 0x8b, 0x7b, 0x18)       // mov rdi, [rbx+24]: argv[2]
	emit(0x48, 0x8d, 0x73, 0x18)       // lea rsi, [rbx+24]: &argv[2]
	emit(0x4a, 0x8d, 0x54, 0xe3, 0x10) // lea rdx, [rbx+r12*8+16]: envp
	emit(0x0f, 0x05)                   // syscall
	emit(0xe9)                         // jmp exec (it returned: failed)
	rel("exec")

	msgs := []struct{ label, text string }{
		{"user", "ferry: private /tmp: cannot enter the job's user namespace\n"},
		{"mnt", "ferry: private /tmp: cannot enter the job's mount namespace\n"},
		{"usage", "ferry: private /tmp: usage: enter DIR PROGRAM [ARGS]\n"},
		{"chdir", "ferry: private /tmp: the working directory is not in the job's namespace\n"},
		{"exec", "ferry: private /tmp: cannot execute the job's shell\n"},
	}
	// Each failure: rsi = its message, edx = its length, then write it.
	for _, m := range msgs {
		labels[m.label] = len(code)
		emit(0x48, 0x8d, 0x35) // lea rsi, [rip+msg]
		rel("msg:" + m.label)  //
		emit(0xba)
		u32(uint32(len(m.text))) // mov edx, len
		emit(0xe9)               // jmp die
		rel("die")               //
	}
	labels["die"] = len(code)
	emit(0xb8)
	u32(unix.SYS_WRITE) // mov eax, SYS_write
	emit(0xbf)
	u32(2)           // mov edi, 2
	emit(0x0f, 0x05) // syscall
	emit(0xb8)
	u32(unix.SYS_EXIT_GROUP) // mov eax, SYS_exit_group
	emit(0xbf)
	u32(127)         // mov edi, 127
	emit(0x0f, 0x05) // syscall
	for _, m := range msgs {
		labels["msg:"+m.label] = len(code)
		code = append(code, m.text...)
	}
	for _, f := range fix {
		t, ok := labels[f.target]
		if !ok {
			panic("tmpns: EnterProgram: no label " + f.target)
		}
		binary.LittleEndian.PutUint32(code[f.at:], uint32(int32(t-(f.at+4))))
	}

	return elfexec.Wrap(code)
}

// WriteEnterProgram writes EnterProgram to path (0500): prepare puts it in
// the job's state dir, which the job may read and execute but not write.
func WriteEnterProgram(path string) error {
	if err := os.WriteFile(path, EnterProgram(), 0o500); err != nil {
		return fmt.Errorf("private /tmp: %w", err)
	}
	return nil
}

// TryEnterProgram runs the EnterProgram at path without namespaces to
// enter: it must start (a state dir on a noexec filesystem would refuse
// every stage's exec) and fail at the first step, as written.
func TryEnterProgram(path string) error {
	cmd := exec.Command(path, "/", "/bin/true")
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 127 && strings.Contains(string(out), "user namespace") {
		return nil
	}
	if err == nil {
		err = errors.New("it exited 0")
	}
	return fmt.Errorf("private /tmp: %s does not run: %v %s", path, err, strings.TrimSpace(string(out)))
}

// Namespaces are a holder's namespace files, opened by OpenHeld.
type Namespaces struct {
	User, Mnt *os.File
}

// Close closes both.
func (n *Namespaces) Close() {
	if n == nil {
		return
	}
	n.User.Close()
	n.Mnt.Close()
}

// OpenHeld opens the namespaces of the holder dir's PID file names, and
// checks after opening them that the pid is still that holder (same start
// time): a pid another process took since, another job's holder
// included, is never entered. It also checks that the holder still holds
// the mounts plan describes (see Plan): a kept directory removed and made
// again since prepare would be missing in the holder's namespace.
func OpenHeld(dir, plan string) (*Namespaces, error) {
	holder, err := readPIDFile(filepath.Join(dir, HoldPIDFile))
	if err != nil {
		return nil, err
	}
	pid := holder.PID
	ns, err := openNamespaces(dir, pid, plan)
	if err != nil {
		return nil, err
	}
	// The holder's own namespaces, this job's: its /tmp (and /var/tmp) are
	// the directories the plan names. Another job's holder, which a
	// forged PID file could name, has other ones.
	private := false
	for _, line := range strings.Split(plan, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || f[0] != "on" {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(procRoot(pid)+f[1], &st); err != nil || fmt.Sprintf("%d:%d", st.Dev, st.Ino) != f[3] {
			ns.Close()
			return nil, fmt.Errorf("process %d does not hold this job's %s", pid, f[1])
		}
		private = true
	}
	if !private {
		ns.Close()
		return nil, errors.New("no private /tmp to enter")
	}
	// Last: the pid was the holder's all along (a process that took its
	// pid since has another start time).
	if !holder.Alive() {
		ns.Close()
		return nil, errors.New("the namespace holder is gone (its pid is another process's)")
	}
	return ns, nil
}

// openNamespaces opens the namespace files of pid, the holder of dir, if
// its recorded plan (HoldPlanFile) is plan. The caller checks that pid was
// the holder all along.
func openNamespaces(dir string, pid int, plan string) (*Namespaces, error) {
	if b, err := os.ReadFile(filepath.Join(dir, HoldPlanFile)); err != nil || string(b) != plan {
		return nil, errors.New("the job's directories under /tmp changed since prepare")
	}
	proc := "/proc/" + strconv.Itoa(pid) + "/ns/"
	user, err := os.OpenFile(proc+"user", os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the namespace holder: %w", err)
	}
	mnt, err := os.OpenFile(proc+"mnt", os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		user.Close()
		return nil, fmt.Errorf("the namespace holder: %w", err)
	}
	return &Namespaces{User: user, Mnt: mnt}, nil
}

// A Holder is a job's namespace holder, opened and checked once for a
// stage that takes both its ruleset and its namespaces from it: a pidfd
// names the process for good, so what was checked of it holds.
type Holder struct {
	pid, pidfd int
	dir        string
}

// OpenHolder opens the holder of dir, once sure the pid is still that
// holder and holds this job's private /tmp, tmp (as OpenHeld checks): no
// other process's descriptors are ever taken.
func OpenHolder(dir, tmp string) (*Holder, error) {
	rec, err := readPIDFile(filepath.Join(dir, HoldPIDFile))
	if err != nil {
		return nil, err
	}
	pidfd, err := unix.PidfdOpen(rec.PID, 0)
	if err != nil {
		return nil, fmt.Errorf("the namespace holder: %w", err)
	}
	h := &Holder{pid: rec.PID, pidfd: pidfd, dir: dir}
	// Checked once the pidfd is open: the start time and the private
	// /tmp are then that process's.
	if !rec.Alive() {
		h.Close()
		return nil, errors.New("the namespace holder is gone (its pid is another process's)")
	}
	var held, own unix.Stat_t
	if err := unix.Stat(procRoot(rec.PID)+"/tmp", &held); err != nil {
		h.Close()
		return nil, fmt.Errorf("the namespace holder: %w", err)
	}
	if err := unix.Stat(tmp, &own); err != nil || held.Dev != own.Dev || held.Ino != own.Ino {
		h.Close()
		return nil, fmt.Errorf("process %d does not hold this job's /tmp", rec.PID)
	}
	return h, nil
}

// Close releases the pidfd (nil-safe).
func (h *Holder) Close() {
	if h != nil && h.pidfd >= 0 {
		unix.Close(h.pidfd)
		h.pidfd = -1
	}
}

// Ruleset takes a copy of the Landlock ruleset the holder keeps
// (HoldRulesetFD). The caller checks that it is one (a holder given none
// may have another descriptor there: sandbox.Adopt refuses it) and still
// the one a build would make (the stamp in HoldStampFile).
func (h *Holder) Ruleset() (int, error) {
	fd, err := unix.PidfdGetfd(h.pidfd, HoldRulesetFD, 0)
	if err != nil {
		return -1, fmt.Errorf("the namespace holder's ruleset: %w", err)
	}
	return fd, nil
}

// Namespaces opens the holder's namespaces, as OpenHeld does, if it still
// holds the mounts plan describes.
func (h *Holder) Namespaces(plan string) (*Namespaces, error) {
	ns, err := openNamespaces(h.dir, h.pid, plan)
	if err != nil {
		return nil, err
	}
	// The pid is still the pidfd's process (so the files are its own):
	// signal 0 fails once that process has ended.
	if err := unix.PidfdSendSignal(h.pidfd, 0, nil, 0); err != nil {
		ns.Close()
		return nil, errors.New("the namespace holder is gone")
	}
	return ns, nil
}

func procRoot(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/root" }

// readPIDFile reads the holder's jobproc PID file, alive or not: its pid is
// checked again after its namespaces are open.
func readPIDFile(path string) (jobproc.Owner, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return jobproc.Owner{}, fmt.Errorf("no namespace holder: %w", err)
	}
	o, ok := jobproc.ParseRecord(string(b))
	if !ok {
		return jobproc.Owner{}, fmt.Errorf("%s: not a PID file", path)
	}
	return o, nil
}
