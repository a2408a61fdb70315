// Package holder is the per-job process that holds a job's SSH connections
// to remote Docker engines and serves them to the job on private unix
// sockets (pkg/docker/jobsocket), as an HTTP proxy of the Docker API that
// adds ferry's guards (guards.go).
//
// It outlives the stages: prepare starts it (`ferry docker-holder`, a new
// session, not a descendant of any `ferry run` and without FERRY_JOB_KEY), and
// it ends on SIGTERM (cleanup), when the runner process that ran prepare
// dies, when its directory disappears (stale sweep, cleanup), or at the
// job's deadline. On every exit it removes its directory: sockets, the
// job's DOCKER_CONFIG, captured logins. It runs outside the job's sandbox;
// the SSH keys it uses never touch the disk in its directory.
package holder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/deployguard"
	"gitlab.com/ferry-ci/ferry/pkg/docker/jobsocket"
	"gitlab.com/ferry-ci/ferry/pkg/docker/sshdial"
)

// Files in the holder's directory.
const (
	PIDFile      = "holder.pid"  // "<pid> <starttime>"
	NoticesFile  = "notices"     // lines for the job log (refused peers, guards)
	CapturedFile = "captured"    // secrets learned from docker login, one per line
	LogFile      = "holder.log"  // the holder's own diagnostics (no secrets)
	KnownHosts   = "known_hosts" // SSH_KNOWN_HOSTS as a file (not secret)
	ConfigDir    = "config"      // the job's DOCKER_CONFIG
)

// Config is what prepare hands the holder on its stdin (never on disk).
type Config struct {
	Dir              string // the holder's directory, inside the job state dir
	DockerConfig     string // the job's DOCKER_CONFIG (logins are read from it)
	Policy           jobsocket.Policy
	Deadline         time.Time
	JobToken         string // CI_JOB_TOKEN, for the stack-deploy note
	PreflightTimeout time.Duration
	Endpoints        []Endpoint
	// Guard is the job's deploy rules (pkg/deployguard), applied to
	// compose projects and stacks (deployguard.go); nil: none.
	Guard *deployguard.Guard `json:",omitempty"`
	// Lock is the deploy lock per compose project and stack (lock.go);
	// nil: none.
	Lock *LockConfig `json:",omitempty"`
	// CleanupDone is a path cleanup removes last (the job state dir):
	// told to stop by cleanup, the holder releases its locks once it is
	// gone (waitCleanup), not while cleanup still runs.
	CleanupDone string `json:",omitempty"`
}

// Endpoint is one remote engine and its socket.
type Endpoint struct {
	Name            string // "" for DOCKER_HOST, else the context name
	Socket          string
	URL             string
	KeyPEM          []byte   // the job's key (SSH_PRIVATE_KEY)
	Passphrase      string   // its passphrase, if HasPassphrase
	HasPassphrase   bool     //
	KeyFiles        []string // the runner user's identity files (hand-made contexts)
	KnownHostsFiles []string
	Names           sshdial.Names
	// Preflight: connect and probe before reporting ready; an error fails
	// the job. Otherwise the endpoint connects on first use.
	Preflight bool
	// TrustOnFirstUse: no known hosts, the admin allows any host key.
	TrustOnFirstUse bool
}

// Report is the holder's answer on its stdout, one JSON line.
type Report struct {
	Engines []string `json:"engines,omitempty"` // preflight lines, per Preflight endpoint
	Error   string   `json:"error,omitempty"`
	Build   bool     `json:"build,omitempty"` // the error is the user's (bad variable, key, host)
}

// Main is `ferry docker-holder`: read the Config from stdin, connect, write
// the Report to stdout, close it, serve until told to stop.
func Main(stdin io.Reader, stdout io.WriteCloser, stderr io.Writer) int {
	var cfg Config
	if err := json.NewDecoder(stdin).Decode(&cfg); err != nil {
		writeReport(stdout, Report{Error: "ferry: docker holder: bad config: " + err.Error()})
		return 1
	}
	h := &holder{cfg: cfg, log: stderr}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Told to stop (cleanup, which does not wait), the holder ends within
	// shutdownBudget of the signal whatever it is doing then: starting
	// (an SSH handshake, the probe) as well as stopping.
	unbound := context.AfterFunc(ctx, func() { h.exitAfter(shutdownBudget) })
	defer unbound()
	rep, err := h.start(ctx)
	if err != nil {
		h.shutdown()
		var se *sshdial.Error
		var kp *sshdial.KeyProblem
		rep.Error = err.Error()
		rep.Build = errors.As(err, &se) || errors.As(err, &kp) || errors.Is(err, errBuild)
		writeReport(stdout, rep)
		return 1
	}
	writeReport(stdout, rep)
	stdout.Close()
	h.wait(ctx)
	h.waitCleanup(ctx)
	h.shutdown()
	return 0
}

var errBuild = errors.New("user error")

func writeReport(w io.Writer, r Report) {
	b, _ := json.Marshal(r)
	w.Write(append(b, '\n'))
}

type holder struct {
	cfg     Config
	log     io.Writer
	mu      sync.Mutex
	servers []*http.Server
	clients []*lazyClient
	locks   []*engineLock
	notes   sync.Mutex
}

func (h *holder) start(ctx context.Context) (Report, error) {
	var rep Report
	if err := jobproc.WritePIDFile(filepath.Join(h.cfg.Dir, PIDFile), os.Getpid()); err != nil {
		return rep, err
	}
	timeout := h.cfg.PreflightTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	for _, ep := range h.cfg.Endpoints {
		t, err := sshdial.ParseURL(ep.URL)
		if err != nil {
			return rep, fmt.Errorf("ferry: %s: %s: %w", ep.Names.Host, err.Error(), errBuild)
		}
		signers, err := h.signers(ep)
		if err != nil {
			return rep, err
		}
		lc := &lazyClient{cfg: sshdial.Config{Target: t, Signers: signers, KnownHostsFiles: ep.KnownHostsFiles, Timeout: timeout, Names: ep.Names, TrustOnFirstUse: ep.TrustOnFirstUse}}
		if ep.Preflight {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			c, err := sshdial.Dial(pctx, lc.cfg)
			if err != nil {
				cancel()
				return rep, err
			}
			lc.c = c
			eng, err := sshdial.Probe(pctx, c, timeout)
			cancel()
			if err != nil {
				return rep, err
			}
			line := fmt.Sprintf("%s on %s, %s", eng, t, eng.Swarm)
			if ep.TrustOnFirstUse {
				k := c.HostKey()
				line += fmt.Sprintf(" (host key %s %s trusted on first use)", k.Type(), ssh.FingerprintSHA256(k))
			}
			rep.Engines = append(rep.Engines, line)
		}
		h.clients = append(h.clients, lc)
		l, err := jobsocket.Listen(ep.Socket, h.cfg.Policy, func(r jobsocket.Refusal) {
			h.notice("ferry: docker socket %s: %s", filepath.Base(ep.Socket), r)
		})
		if err != nil {
			return rep, fmt.Errorf("ferry: docker socket %s: %w", ep.Socket, err)
		}
		srv := &http.Server{Handler: h.proxy(lc), ErrorLog: nil, ConnContext: peerContext}
		if ep.Preflight && h.cfg.Lock != nil && len(h.locks) > 0 {
			// Connected already: ready the lock's spare while the job
			// starts, off the deploy's path.
			h.locks[len(h.locks)-1].l.Prime()
		}
		h.servers = append(h.servers, srv)
		go srv.Serve(l)
	}
	return rep, nil
}

// signers loads the endpoint's keys: the job's, or the runner user's files
// (unencrypted ones; an encrypted one is skipped, as ssh would prompt).
func (h *holder) signers(ep Endpoint) ([]ssh.Signer, error) {
	var out []ssh.Signer
	if len(ep.KeyPEM) > 0 {
		s, err := sshdial.ParseKey(ep.KeyPEM, []byte(ep.Passphrase), ep.HasPassphrase)
		if err != nil {
			return nil, fmt.Errorf("ferry: %s %w", ep.Names.Key, err)
		}
		out = append(out, s)
	}
	for _, f := range ep.KeyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if s, err := ssh.ParsePrivateKey(b); err == nil {
			out = append(out, s)
		} else {
			fmt.Fprintf(h.log, "skipping key %s: %v\n", f, err)
		}
	}
	return out, nil
}

// wait returns when the holder must stop.
func (h *holder) wait(ctx context.Context) {
	runnerGone := make(chan struct{})
	go func() {
		waitPID(h.cfg.Policy.RunnerPID)
		close(runnerGone)
	}()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	deadline := time.NewTimer(time.Until(h.cfg.Deadline))
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-runnerGone:
			fmt.Fprintln(h.log, "the runner process is gone: stopping")
			return
		case <-deadline.C:
			fmt.Fprintln(h.log, "job deadline reached: stopping")
			return
		case <-tick.C:
			if _, err := os.Stat(h.cfg.Dir); err != nil {
				fmt.Fprintln(h.log, "directory gone: stopping")
				return
			}
		}
	}
}

// waitPID returns when pid exits (pidfd), at once if it is already gone.
func waitPID(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return
		}
		// No pidfd (old kernel): poll.
		for syscall.Kill(pid, 0) == nil {
			time.Sleep(time.Second)
		}
		return
	}
	defer unix.Close(fd)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// shutdownBudget bounds the holder's end once it must stop: cleanup does
// not wait for it (Stop), so a holder whose engine no longer answers (the
// release's requests wait up to 3 s) must not linger; what it could not
// release runs out with its lease.
const shutdownBudget = 5 * time.Second

// exitAfter ends the process after d unless it has ended by then.
func (h *holder) exitAfter(d time.Duration) *time.Timer {
	return time.AfterFunc(d, func() {
		fmt.Fprintf(h.log, "not done stopping after %s: exiting (a lock not released runs out with its lease)\n", d)
		os.RemoveAll(h.cfg.Dir)
		os.Exit(1)
	})
}

// waitCleanup returns once the job's cleanup is over (Config.CleanupDone
// gone), or after cleanupWait, when the holder stops on cleanup's signal
// with the deploy lock on. Its release (requests over SSH, the engine's
// removal of the job's lock, tickets and spare) then no longer competes
// with cleanup for the runner host's CPU: on two cores with a local
// engine it made cleanup 5.2 ms slower (BenchmarkComposeV1Lock, 30 pairs,
// 95% CI 1.9..9.4 ms). A job waiting for the lock gets it that much
// later: cleanup's last milliseconds. Stopped for any other reason (the runner's death, the
// deadline), the holder releases at once.
func (h *holder) waitCleanup(ctx context.Context) {
	h.mu.Lock()
	locked := len(h.locks) > 0
	h.mu.Unlock()
	if ctx.Err() == nil || !locked || h.cfg.CleanupDone == "" {
		return
	}
	for end := time.Now().Add(cleanupWait); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if _, err := os.Lstat(h.cfg.CleanupDone); errors.Is(err, fs.ErrNotExist) {
			return
		}
	}
}

// cleanupWait bounds waitCleanup: cleanup takes ~30 ms here.
const cleanupWait = 500 * time.Millisecond

func (h *holder) shutdown() {
	// Also when nobody signalled it (the runner's death, the deadline,
	// its directory gone).
	defer h.exitAfter(shutdownBudget).Stop()
	for _, s := range h.servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.Shutdown(ctx)
		s.Close()
		cancel()
	}
	// Sockets, the job's DOCKER_CONFIG (its logins), captured secrets:
	// first (cleanup has removed them already; the runner's death and
	// the deadline have not).
	os.RemoveAll(h.cfg.Dir)
	// The locks go once no request uses them (a waiting one removes its
	// ticket as its connection closes), before the connections do.
	h.releaseLocks()
	for _, c := range h.clients {
		c.close()
	}
}

// notice appends a line for the job log; ferry run prints new lines before
// the next stage.
func (h *holder) notice(format string, args ...any) {
	h.notes.Lock()
	defer h.notes.Unlock()
	f, err := os.OpenFile(filepath.Join(h.cfg.Dir, NoticesFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format+"\n", args...)
}

// lazyClient dials on first use (hand-made contexts: a job may never use
// them, and an unreachable one must not fail jobs that do not).
type lazyClient struct {
	cfg sshdial.Config
	mu  sync.Mutex
	c   *sshdial.Client
}

func (l *lazyClient) dial(ctx context.Context) (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	if c == nil {
		var err error
		if c, err = sshdial.Dial(ctx, l.cfg); err != nil {
			l.mu.Unlock()
			return nil, err
		}
		l.c = c
	}
	l.mu.Unlock()
	return c.DialDocker(ctx)
}

func (l *lazyClient) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c != nil {
		l.c.Close()
	}
}
