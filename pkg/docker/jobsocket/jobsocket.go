// Package jobsocket is a unix socket that serves one job's processes only.
//
// A path socket is listed in /proc/net/unix for everyone on the host, and a
// sandbox (Landlock) does not stop a connect() to a path, so file modes are
// not enough on a shared runner where every job runs as the same user. Each
// peer is checked when it connects:
//   - SO_PEERCRED: same uid as the listener;
//   - ancestry: walking up from the peer, the topmost process that carries a
//     JOB_RESPONSE_FILE in its environment must carry this job's, and its
//     parent must be the runner process that ran this job's prepare. That
//     process is this job's `ferry run` (or prepare): the runner sets
//     JOB_RESPONSE_FILE, a per-job path, for its executor calls, and ferry
//     never passes it on to the job script. A process of another job is
//     below that job's `ferry run`, whose JOB_RESPONSE_FILE differs; a process
//     that sets the variable itself and escapes to init has no runner parent.
//
// /proc/<pid>/environ is what the process was started with; it cannot be
// changed afterwards without CAP_SYS_RESOURCE.
package jobsocket

import (
	"bytes"
	"errors"
	"fmt"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Policy says whose connections are accepted.
type Policy struct {
	UID             int    // the peer's uid must be this one
	JobResponseFile string // this job's JOB_RESPONSE_FILE
	RunnerPID       int    // the process that runs this job's executor calls
}

// Refusal is one refused peer, for the job log of the socket's owner.
type Refusal struct {
	PID    int
	UID    int
	Cmd    string
	Reason string
}

func (r Refusal) String() string {
	// The command line is the peer's to choose: quoted, so it cannot
	// forge lines or escape sequences in the job log.
	return fmt.Sprintf("refused a connection from pid %d (uid %d, %q): %s", r.PID, r.UID, r.Cmd, r.Reason)
}

// Listen creates the socket at path (mode 0600) and returns a listener whose
// Accept returns only connections that pass the policy; refused ones are
// closed and reported to onRefuse.
func Listen(path string, p Policy, onRefuse func(Refusal)) (net.Listener, error) {
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(true)
	return &listener{UnixListener: l, p: p, onRefuse: onRefuse}, nil
}

// Wrap applies the policy to a listener made elsewhere: a socket another
// process created and handed over (the deploy lock's holder gets its
// listening socket from prepare, so that the socket exists before the
// holder has started).
func Wrap(l *net.UnixListener, p Policy, onRefuse func(Refusal)) net.Listener {
	return &listener{UnixListener: l, p: p, onRefuse: onRefuse}
}

type listener struct {
	*net.UnixListener
	p        Policy
	onRefuse func(Refusal)
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if r, ok := l.check(c); !ok {
			c.Close()
			if l.onRefuse != nil {
				l.onRefuse(r)
			}
			continue
		}
		return c, nil
	}
}

func (l *listener) check(c *net.UnixConn) (Refusal, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Refusal{Reason: err.Error()}, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return Refusal{Reason: fmt.Sprintf("SO_PEERCRED: %v", errors.Join(err, cerr))}, false
	}
	r := Refusal{PID: int(cred.Pid), UID: int(cred.Uid), Cmd: command(int(cred.Pid))}
	if err := l.p.Check(int(cred.Pid), int(cred.Uid)); err != nil {
		r.Reason = err.Error()
		return r, false
	}
	return r, true
}

// Check applies the policy to a peer.
func (p Policy) Check(pid, uid int) error {
	if uid != p.UID {
		return fmt.Errorf("uid %d is not the job's uid %d", uid, p.UID)
	}
	if pid <= 0 {
		return errors.New("no peer pid")
	}
	var top, topParent int
	topJRF := ""
	cur := pid
	for i := 0; i < 512 && cur > 1; i++ {
		ppid, ok := jobproc.ParentPID(cur)
		if !ok {
			return fmt.Errorf("process %d vanished while being checked", cur)
		}
		if v, ok := environValue(cur, "JOB_RESPONSE_FILE"); ok {
			top, topParent, topJRF = cur, ppid, v
		}
		cur = ppid
	}
	switch {
	case top == 0:
		return errors.New("not started by a runner executor call (no JOB_RESPONSE_FILE above it)")
	case topJRF != p.JobResponseFile:
		return fmt.Errorf("belongs to another job (its executor call %d has another JOB_RESPONSE_FILE)", top)
	case topParent != p.RunnerPID:
		return fmt.Errorf("its executor call %d was not started by this job's runner process %d", top, p.RunnerPID)
	}
	return nil
}

// environValue reads one variable of the environment pid was started with.
func environValue(pid int, key string) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return "", false
	}
	return LookupEnviron(b, key)
}

// LookupEnviron finds key in environ, the NUL-separated content of a
// /proc/<pid>/environ.
func LookupEnviron(environ []byte, key string) (string, bool) {
	prefix := []byte(key + "=")
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, prefix); ok {
			return string(v), true
		}
	}
	return "", false
}

func command(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return "?"
	}
	s := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}

// RunnerOf returns the runner process of the executor call pid belongs to:
// the parent of the topmost ancestor-or-self whose environment has
// JOB_RESPONSE_FILE=jrf. prepare calls it on itself to set Policy.RunnerPID.
func RunnerOf(pid int, jrf string) (int, error) {
	runner := 0
	cur := pid
	for i := 0; i < 512 && cur > 1; i++ {
		ppid, ok := jobproc.ParentPID(cur)
		if !ok {
			return 0, fmt.Errorf("process %d vanished", cur)
		}
		if v, ok := environValue(cur, "JOB_RESPONSE_FILE"); ok && v == jrf {
			runner = ppid
		}
		cur = ppid
	}
	if runner == 0 {
		return 0, errors.New("no ancestor with this job's JOB_RESPONSE_FILE")
	}
	return runner, nil
}
