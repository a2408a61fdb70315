// Package lockclient is the half of the deploy lock (docs/deploy-safety.md)
// that links no Kubernetes code: the wire protocol between the job's kubectl
// and the job's lock holder, the kubectl's side of it (Acquire), and the
// holder's start and stop for prepare and cleanup. The holder itself, which
// talks to the API server, is pkg/deploylock (engine only).
//
// The holder is a per-job process started by prepare outside the job
// script (in its own session, not marked as a process of the job), so that
// it outlives every stage script and renews the lock until cleanup. prepare
// creates its listening socket before starting it: the socket exists from
// the first stage on, whether or not the holder has finished starting.
package lockclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Subcommand is the hidden engine subcommand that runs the holder.
const Subcommand = "deploy-lock-holder"

// SocketEnv names the job-script variable that carries the holder's socket.
// Without it (the lock is off, or the job has no Kubernetes credentials of
// ferry's) the job's kubectl takes no lock.
const SocketEnv = "FERRY_DEPLOY_LOCK_SOCKET"

// Files in the holder's directory (<job state>/lock/).
const (
	SocketFile = "lock.sock"
	PIDFile    = "holder.pid"
	LogFile    = "holder.log"
)

// Creds are the credentials the kubectl's call uses, resolved (file
// contents, not paths: the holder runs outside the job's sandbox and never
// reads a file the job names).
type Creds struct {
	Server        string `json:"server"`
	Token         string `json:"token,omitempty"`
	CAData        []byte `json:"ca,omitempty"`
	CertData      []byte `json:"cert,omitempty"`
	KeyData       []byte `json:"key,omitempty"`
	TLSServerName string `json:"tls_server_name,omitempty"`
	Insecure      bool   `json:"insecure,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
}

// Request asks the holder for the lock of the job's target in Namespace.
// UseJobKubeconfig: the call's credentials cannot be handed over (an exec
// plugin): the holder uses the job's kubeconfig that prepare wrote.
type Request struct {
	Namespace        string `json:"namespace"`
	Creds            Creds  `json:"creds"`
	UseJobKubeconfig bool   `json:"use_job_kubeconfig,omitempty"`
	Verb             string `json:"verb,omitempty"` // for the holder's log only
}

// Reply is one line from the holder: Wait (a line for the job log, the job
// must wait), then OK or Error.
type Reply struct {
	Wait  string `json:"wait,omitempty"`
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`
}

// Acquire asks the holder at socket for the lock and returns once the job
// holds it. Lines the holder sends while the job waits go to log. The
// error is one line for the job log. Cancelling ctx (or this process
// dying) drops the connection, and the holder then removes the job from
// the lock's queue.
func Acquire(ctx context.Context, socket string, req Request, log io.Writer) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: cannot reach this job's lock holder (%s): %v", socket, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fmt.Errorf("ferry: deploy lock: talking to this job's lock holder: %v", err)
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("ferry: deploy lock: this job's lock holder ended without an answer: %v", err)
		}
		var rep Reply
		if err := json.Unmarshal(line, &rep); err != nil {
			return fmt.Errorf("ferry: deploy lock: bad answer from this job's lock holder: %v", err)
		}
		switch {
		case rep.Error != "":
			return errors.New(rep.Error)
		case rep.OK:
			return nil
		case rep.Wait != "":
			fmt.Fprintln(log, rep.Wait)
		}
	}
}

// Config is what prepare hands the holder on its stdin. The listening socket
// is the holder's fd 3.
type Config struct {
	Dir             string        `json:"dir"`
	Kubeconfig      string        `json:"kubeconfig,omitempty"` // the job's kubeconfig prepare wrote
	ID              string        `json:"id"`                   // unique per job and holder start
	Project         string        `json:"project"`              // CI_PROJECT_PATH
	Pipeline        string        `json:"pipeline"`             // CI_PIPELINE_ID
	Job             string        `json:"job"`                  // the payload's job id
	JobURL          string        `json:"job_url,omitempty"`    // CI_JOB_URL, for the holder's line
	Environment     string        `json:"environment,omitempty"`
	LeaseDuration   time.Duration `json:"lease_duration"`
	Deadline        time.Time     `json:"deadline"` // the job's timeout: no wait beyond it
	UID             int           `json:"uid"`
	JobResponseFile string        `json:"job_response_file"`
	RunnerPID       int           `json:"runner_pid"`
}

// Start creates dir and its socket, starts `<exe> deploy-lock-holder <dir>`
// in a new session with the socket as fd 3 and cfg on its stdin, and
// returns without waiting for it: the socket accepts connections at once
// and the holder answers them when it is ready. Safe to call while other
// goroutines of the process run (it changes no process-wide setting).
func Start(exe string, cfg Config) error { return start(exe, cfg, false) }

// StartAfterExit is Start for prepare: the holder's engine is exec'd only
// once this process has exited. Until then the holder is a /bin/sh (a
// millisecond of CPU) that waits for the end of file on a pipe whose write
// end this process keeps open until it exits, then execs the engine in
// place: same pid and start time (the PID file stays right), the socket
// and config already its own. The engine's start is 20-30 ms of CPU (its
// package init: client-go's scheme and kubectl's) that competed with the
// rest of prepare on a loaded host (stages BenchmarkLockPrepareCost); the
// job's kubectl cannot connect before the job's first stage anyway, and a
// connection made before the holder is ready waits in the socket's
// backlog. cleanup's SIGTERM ends the shell as it ends the holder. Without
// /bin/sh it is Start.
func StartAfterExit(exe string, cfg Config) error {
	if _, err := os.Stat(waitShell); err != nil {
		return start(exe, cfg, false)
	}
	return start(exe, cfg, true)
}

// waitShell runs StartAfterExit's wait.
const waitShell = "/bin/sh"

// exitPipes are the write ends StartAfterExit keeps open until this
// process exits (held here so that no finalizer closes them earlier).
var (
	exitPipesMu sync.Mutex
	exitPipes   []*os.File
)

func start(exe string, cfg Config, afterExit bool) error {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	path := filepath.Join(cfg.Dir, SocketFile)
	_ = os.Remove(path)
	// Made 0600 by a chmod, not the umask: the umask is the whole
	// process's, and prepare starts the holder while its later features
	// create files. Nobody else can connect meanwhile: only the owner may
	// enter the 0700 dir.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	l.SetUnlinkOnClose(false) // the holder owns it now
	lf, err := l.File()
	l.Close()
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	defer lf.Close()
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	defer logf.Close()
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	// The config is complete in the holder's stdin before it starts: an
	// in-memory file, written and rewound here. (It was an io.Reader, which
	// os/exec copies into a pipe from a goroutine of this process: prepare
	// returns right after Start, and when it exited before that goroutine
	// ran, the holder read end of file, logged "bad config" and ended,
	// leaving a socket nobody listened on: the job's kubectl got
	// "connection refused".)
	in, err := configFile(append(b, '\n'))
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: the lock holder's config: %w", err)
	}
	defer in.Close()
	cmd := exec.Command(exe, Subcommand, cfg.Dir)
	var exitR, exitW *os.File
	if afterExit {
		if exitR, exitW, err = os.Pipe(); err != nil {
			return fmt.Errorf("ferry: deploy lock: %w", err)
		}
		defer exitR.Close()
		// fd 4 is the pipe's read end: `read` returns at its end of file,
		// when this process (the only holder of the write end: it is
		// close-on-exec here) has exited.
		cmd = exec.Command(waitShell, "-c", `read -r x <&4; exec 4<&- "$0" "$@"`, exe, Subcommand, cfg.Dir)
	}
	// Nothing of the runner's conversation (CUSTOM_ENV_*, JOB_RESPONSE_FILE):
	// the holder is not a process of the job script.
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	cmd.Stdin = in // an *os.File: handed over as fd 0, no copying goroutine
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{lf}
	if afterExit {
		cmd.ExtraFiles = append(cmd.ExtraFiles, exitR)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		if exitW != nil {
			exitW.Close()
		}
		return fmt.Errorf("ferry: deploy lock: start the lock holder: %w", err)
	}
	if exitW != nil {
		exitPipesMu.Lock()
		exitPipes = append(exitPipes, exitW)
		exitPipesMu.Unlock()
	}
	err = jobproc.WritePIDFile(filepath.Join(cfg.Dir, PIDFile), cmd.Process.Pid)
	// Reaped by whoever adopts it once prepare exits. Every file the holder
	// gets is an *os.File, so Wait has nothing of the holder's to finish.
	go cmd.Wait()
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	return nil
}

// configFile is an anonymous in-memory file (memfd) holding b, rewound:
// whatever its size, it is all there before the holder reads it, and no
// path ever names it.
func configFile(b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("ferry-lock-config", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "ferry-lock-config")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Stop asks the holder of dir to release what it holds and end (SIGTERM)
// and removes dir, without waiting for it: the holder gives its leases up
// on its own (one request each, bounded by its own timeouts, and a
// watchdog that ends it whatever happens; a lease it could not give up
// runs out) and exits. So cleanup does not wait for the API server, and
// the next job waiting for the lock gets it as soon as the release lands.
// Safe when there is no holder.
func Stop(dir string) error {
	if pid, ok := HolderPID(dir); ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("ferry: deploy lock: remove %s: %w", dir, err)
	}
	return nil
}

// EndedEarly reports a holder of dir that is no longer running although
// nobody stopped it (it must serve until cleanup), with its log: for the
// runner's log at cleanup, since the job's kubectl can only say that
// nobody answered.
func EndedEarly(dir string) (log string, ended bool) {
	if _, err := os.Stat(filepath.Join(dir, PIDFile)); err != nil {
		return "", false // never started (no kubeconfig of ferry's, lock off)
	}
	if _, ok := HolderPID(dir); ok {
		return "", false
	}
	b, _ := os.ReadFile(filepath.Join(dir, LogFile))
	return strings.TrimRight(string(b), "\n"), true
}

// A job's later mutating calls find the lock held by their own job. So that
// they need not even ask (a connection, and the holder's check of the
// peer's ancestry), the holder keeps a mark in its dir while it holds the
// lock of a namespace: a symlink held-<namespace> whose target is the
// holder's pid and start time. A kubectl that finds the mark, made by the
// holder that still runs, goes on at once; whenever unsure (no mark, a
// sandbox that forbids the look, another process with that pid) it asks
// the holder. The holder removes the mark before it gives the lock up or
// when it finds the lock lost. (A job can make the mark itself, as it can
// bypass the lock in other ways: docs/deploy-safety.md, what the lock
// does not do.)
func heldMark(dir, ns string) string { return filepath.Join(dir, "held-"+ns) }

// MarkHeld records (holder side) that the holder process holds the lock
// of ns.
func MarkHeld(dir, ns string, holder jobproc.Owner) error {
	if !dnsLabel.MatchString(ns) {
		return nil // not a namespace name: the kubectl asks, as before
	}
	p := heldMark(dir, ns)
	_ = os.Remove(p)
	return os.Symlink(holder.Record(), p)
}

// UnmarkHeld removes the mark of ns (holder side).
func UnmarkHeld(dir, ns string) {
	if dnsLabel.MatchString(ns) {
		_ = os.Remove(heldMark(dir, ns))
	}
}

// Held reports (kubectl side) whether the holder of socket holds the lock
// of ns: its mark is there and the process that made it still runs.
func Held(socket, ns string) bool {
	if !dnsLabel.MatchString(ns) {
		return false
	}
	v, err := os.Readlink(heldMark(filepath.Dir(socket), ns))
	if err != nil {
		return false
	}
	holder, ok := jobproc.ParseRecord(v)
	return ok && holder.Alive()
}

// dnsLabel is a namespace's name: what may follow "held-" in a file name
// (never a path).
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// HolderPID is the running holder of dir, from its PID file.
func HolderPID(dir string) (int, bool) {
	return jobproc.ReadPIDFile(filepath.Join(dir, PIDFile))
}
