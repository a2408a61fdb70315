package sshdial

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Cause classifies a failure to reach the remote engine.
type Cause int

const (
	CauseOther          Cause = iota
	CauseUnreachable          // TCP connect failed or timed out
	CauseUnknownHostKey       // the host is not in known_hosts
	CauseChangedHostKey       // known_hosts has another key of that type for the host
	CauseKeyRefused           // no offered key was accepted
	CauseNoDocker             // no docker CLI on the remote PATH
	CauseSocketDenied         // the remote user cannot open the daemon's socket
	CauseNoDaemon             // the remote docker CLI cannot reach a daemon
)

// Names are the user-facing names of what a Config was built from, used in
// error messages: the variables of the ferry way, or the hand-made
// context's name and the runner user's files.
type Names struct {
	Host       string // DOCKER_HOST, or `docker context mon-serveur`
	Key        string // SSH_PRIVATE_KEY, or the runner user's files
	KnownHosts string // SSH_KNOWN_HOSTS, or the runner user's known_hosts
}

// Error is a classified failure; Error() is one line naming the variable.
type Error struct {
	Cause Cause
	msg   string
}

func (e *Error) Error() string { return e.msg }

// Config is one remote engine.
type Config struct {
	Target Target
	// Signers are tried in order (public key authentication only).
	Signers []ssh.Signer
	// KnownHostsFiles are read with golang.org/x/crypto/ssh/knownhosts.
	KnownHostsFiles []string
	// Timeout bounds the TCP connect and the SSH handshake (default 10s).
	Timeout time.Duration
	Names   Names
	// TrustOnFirstUse accepts any host key (the admin allowed it and no
	// known hosts were given); HostKey tells which one was accepted.
	TrustOnFirstUse bool
}

// Client is one SSH connection; it reconnects once when the connection was
// lost between two docker connections.
type Client struct {
	cfg     Config
	mu      sync.Mutex
	conn    *ssh.Client
	hostKey ssh.PublicKey
}

// HostKey is the host key of the last successful connection.
func (c *Client) HostKey() ssh.PublicKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hostKey
}

// Dial connects and authenticates.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	c := &Client{cfg: cfg}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	return c, nil
}

// Target returns where the client connects.
func (c *Client) Target() Target { return c.cfg.Target }

// Close closes the SSH connection and every session on it.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

func (c *Client) dial(ctx context.Context) (*ssh.Client, error) {
	check, err := knownhosts.New(c.cfg.KnownHostsFiles...)
	if err != nil {
		return nil, c.errorf(CauseOther, "%s: cannot read known hosts: %v", c.cfg.Names.KnownHosts, err)
	}
	var offered ssh.PublicKey
	cc := &ssh.ClientConfig{
		User: c.cfg.Target.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(c.cfg.Signers...)},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			offered = key
			if c.cfg.TrustOnFirstUse {
				return nil
			}
			return check(host, remote, key)
		},
		Timeout: c.cfg.Timeout,
	}
	conn, err := c.handshake(ctx, cc)
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) && len(ke.Want) > 0 && offered != nil && !sameType(ke.Want, offered) {
		// known_hosts has the host, with keys of other types: ask for those,
		// as OpenSSH does, instead of calling the host key changed.
		cc.HostKeyAlgorithms = algorithmsFor(ke.Want)
		conn, err = c.handshake(ctx, cc)
	}
	if err != nil {
		return nil, c.classifyDial(err, offered)
	}
	c.hostKey = offered
	return conn, nil
}

func (c *Client) handshake(ctx context.Context, cc *ssh.ClientConfig) (*ssh.Client, error) {
	d := net.Dialer{Timeout: c.cfg.Timeout}
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Target.Addr())
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	// The handshake has no context: bound it with a deadline, and end it
	// when ctx ends (the holder told to stop while a silent server keeps
	// it waiting must not wait out the timeout).
	_ = nc.SetDeadline(time.Now().Add(c.cfg.Timeout))
	unwatch := context.AfterFunc(ctx, func() { nc.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(nc, c.cfg.Target.Addr(), cc)
	if !unwatch() && err == nil {
		sc.Close()
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

func sameType(want []knownhosts.KnownKey, k ssh.PublicKey) bool {
	for _, w := range want {
		if w.Key.Type() == k.Type() {
			return true
		}
	}
	return false
}

func algorithmsFor(want []knownhosts.KnownKey) []string {
	var out []string
	for _, w := range want {
		if w.Key.Type() == ssh.KeyAlgoRSA {
			out = append(out, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
			continue
		}
		out = append(out, w.Key.Type())
	}
	return out
}

func (c *Client) errorf(cause Cause, format string, args ...any) error {
	return &Error{Cause: cause, msg: "ferry: " + fmt.Sprintf(format, args...)}
}

func (c *Client) classifyDial(err error, offered ssh.PublicKey) error {
	t, n := c.cfg.Target, c.cfg.Names
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	var oe *net.OpError
	switch {
	case errors.As(err, &ke) && len(ke.Want) == 0:
		return c.errorf(CauseUnknownHostKey, "%s: unknown host key: %s is not in it (the host offers %s %s); add its line, e.g. from `ssh-keyscan -p %d %s` checked out of band",
			n.KnownHosts, knownhosts.Normalize(t.Addr()), offered.Type(), ssh.FingerprintSHA256(offered), t.Port, t.Host)
	case errors.As(err, &ke):
		var had []string
		for _, w := range ke.Want {
			had = append(had, fmt.Sprintf("%s (line %d)", ssh.FingerprintSHA256(w.Key), w.Line))
		}
		return c.errorf(CauseChangedHostKey, "%s: host key CHANGED for %s: the host offers %s %s, the known key is %s; if the host was reinstalled, update %s, otherwise the connection may be intercepted",
			n.KnownHosts, knownhosts.Normalize(t.Addr()), offered.Type(), ssh.FingerprintSHA256(offered), strings.Join(had, ", "), n.KnownHosts)
	case errors.As(err, &re):
		return c.errorf(CauseChangedHostKey, "%s: the host key of %s is marked @revoked", n.KnownHosts, t.Addr())
	case errors.As(err, &oe) && oe.Op == "dial":
		return c.errorf(CauseUnreachable, "%s: cannot reach %s: %v", n.Host, t.Addr(), unwrapAll(oe.Err))
	case strings.Contains(err.Error(), "unable to authenticate"):
		var fps []string
		for _, s := range c.cfg.Signers {
			fps = append(fps, s.PublicKey().Type()+" "+ssh.FingerprintSHA256(s.PublicKey()))
		}
		if len(fps) == 0 {
			return c.errorf(CauseKeyRefused, "%s: no private key to offer to %s@%s", n.Key, t.User, t.Addr())
		}
		return c.errorf(CauseKeyRefused, "%s: key refused by %s@%s (offered %s): add its public key to that user's authorized_keys on the host",
			n.Key, t.User, t.Addr(), strings.Join(fps, ", "))
	case isTimeout(err):
		return c.errorf(CauseUnreachable, "%s: %s did not complete the SSH handshake within %s", n.Host, t.Addr(), c.cfg.Timeout)
	default:
		return c.errorf(CauseOther, "%s: SSH to %s: %v", n.Host, t.String(), err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unwrapAll shortens "dial tcp 127.0.0.1:1: connect: connection refused" to
// its last part when that says it all.
func unwrapAll(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// session opens a session, reconnecting once if the connection is gone.
func (c *Client) session(ctx context.Context) (*ssh.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		if s, err := c.conn.NewSession(); err == nil {
			return s, nil
		}
		c.conn.Close()
		c.conn = nil
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	s, err := conn.NewSession()
	if err != nil {
		return nil, c.errorf(CauseOther, "%s: SSH session on %s: %v", c.cfg.Names.Host, c.cfg.Target.String(), err)
	}
	return s, nil
}

// DialDocker opens one connection to the remote engine: a session running
// `docker system dial-stdio`. The returned conn speaks the Docker API.
func (c *Client) DialDocker(ctx context.Context) (*Conn, error) {
	s, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	stdin, err := s.StdinPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	conn := &Conn{s: s, in: stdin, out: stdout, client: c, done: make(chan struct{})}
	s.Stderr = &conn.stderr
	if err := s.Start(c.cfg.Target.remoteCommand()); err != nil {
		s.Close()
		return nil, c.errorf(CauseOther, "%s: start docker system dial-stdio on %s: %v", c.cfg.Names.Host, c.cfg.Target.String(), err)
	}
	go func() {
		conn.exit = s.Wait()
		close(conn.done)
	}()
	return conn, nil
}

// Conn is a net.Conn over one dial-stdio session.
type Conn struct {
	s      *ssh.Session
	in     io.WriteCloser
	out    io.Reader
	client *Client
	stderr lockedBuffer
	done   chan struct{}
	exit   error
	once   sync.Once
}

func (c *Conn) Read(p []byte) (int, error)  { return c.out.Read(p) }
func (c *Conn) Write(p []byte) (int, error) { return c.in.Write(p) }

// CloseWrite ends the request stream (the docker CLI half-closes hijacked
// connections, e.g. `docker run -i` at the end of its stdin).
func (c *Conn) CloseWrite() error { return c.in.Close() }

func (c *Conn) Close() error {
	c.once.Do(func() {
		c.in.Close()
		c.s.Close()
	})
	return nil
}

func (c *Conn) LocalAddr() net.Addr                { return dialAddr{} }
func (c *Conn) RemoteAddr() net.Addr               { return dialAddr{} }
func (c *Conn) SetDeadline(t time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(t time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { return nil }

type dialAddr struct{}

func (dialAddr) Network() string { return "ssh" }
func (dialAddr) String() string  { return "dial-stdio" }

// RemoteError waits up to wait for the remote command to end and, if it
// failed, returns the classified cause from its exit status and stderr
// (what the docker CLI does not show). nil when it did not fail (yet).
func (c *Conn) RemoteError(wait time.Duration) error {
	select {
	case <-c.done:
	case <-time.After(wait):
		return nil
	}
	if c.exit == nil {
		return nil
	}
	return c.client.classifyRemote(c.exit, c.stderr.String())
}

func (c *Client) classifyRemote(exit error, stderr string) error {
	t, n := c.cfg.Target, c.cfg.Names
	msg := lastLine(stderr)
	code := -1
	var ee *ssh.ExitError
	if errors.As(exit, &ee) {
		code = ee.ExitStatus()
	}
	who := t.User + "@" + t.Addr()
	switch {
	case code == 127 || strings.Contains(msg, "docker: not found") || strings.Contains(msg, "command not found"):
		return c.errorf(CauseNoDocker, "%s: no `docker` on the remote PATH of %s (%s): the docker CLI must be installed there (ssh:// runs `docker system dial-stdio`)", n.Host, who, msg)
	case strings.Contains(stderr, "permission denied"):
		return c.errorf(CauseSocketDenied, "%s: %s cannot open the Docker daemon's socket (%s): add the user to the host's docker group", n.Host, who, socketDetail(stderr))
	case strings.Contains(stderr, "Cannot connect to the Docker daemon") || strings.Contains(stderr, "no such file or directory") || strings.Contains(stderr, "connection refused"):
		return c.errorf(CauseNoDaemon, "%s: the docker CLI of %s cannot reach a Docker daemon (%s)", n.Host, who, socketDetail(stderr))
	default:
		if msg == "" {
			msg = exit.Error()
		}
		return c.errorf(CauseOther, "%s: `%s` failed on %s: %s", n.Host, t.remoteCommand(), who, msg)
	}
}

// socketDetail picks the "dial unix ...: connect: ..." part of the remote
// CLI's message, the true cause.
func socketDetail(stderr string) string {
	if i := strings.LastIndex(stderr, "dial unix "); i >= 0 {
		return lastLine(stderr[i:])
	}
	return lastLine(stderr)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// lockedBuffer keeps the first 8 KiB of the remote stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 8<<10 - l.b.Len(); room > 0 {
		if len(p) > room {
			l.b.Write(p[:room])
		} else {
			l.b.Write(p)
		}
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
