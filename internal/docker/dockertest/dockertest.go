// Package dockertest starts a real remote Docker engine reachable over SSH,
// for tests: Debian's sshd on 127.0.0.1 and dockerd in its own network
// namespace (its bridges, addresses and iptables never touch the host),
// with a registry (htpasswd auth) inside that namespace. Everything is
// started and stopped by PID, with bounded waits. It needs root (and the
// packages `make tools` installs); Start skips the test, loudly, otherwise.
package dockertest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/proctest"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Remote users, by role.
const (
	UserOK       = "ferry-docker-ok"       // in group docker
	UserNoSocket = "ferry-docker-nosock"   // cannot open the daemon socket
	UserNoDocker = "ferry-docker-nodocker" // no docker on its PATH
)

// TokenUser is the user GitLab's registry takes CI_JOB_TOKEN logins as.
const TokenUser = "gitlab-ci-token"

// Remote is one running remote engine.
type Remote struct {
	Dir        string
	SSHPort    int
	HostKey    ssh.PublicKey
	KnownHosts string // the known_hosts line for [127.0.0.1]:SSHPort
	DockerSock string // the daemon's socket, reachable from the host
	Registry   string // host:port of the registry, as the daemon sees it
	RegUser    string
	RegPass    string
	// Key is the private key (PEM) authorized for every user.
	Key []byte

	procs []*exec.Cmd // sshd, dockerd, registry: stopped in reverse order
	fwd   net.Listener
	tb    testing.TB
}

// Need skips tb when the machine cannot run a Remote, saying why.
func Need(tb testing.TB) {
	tb.Helper()
	if os.Getuid() != 0 {
		tb.Skip("SKIPPED (not root): the Docker-over-SSH tests start sshd and dockerd in a network namespace; run them as root (CI does)")
	}
	for _, b := range []string{"/usr/sbin/sshd", "/usr/sbin/dockerd", "/usr/bin/docker-registry", "/bin/busybox"} {
		if _, err := os.Stat(b); err != nil {
			tb.Skipf("SKIPPED: %s missing: install openssh-server docker.io docker-registry busybox-static (`make tools` does)", b)
		}
	}
}

// shared is the test binary's one Remote (Shared, StopShared): sshd,
// dockerd and the registry take seconds to start, so a package's tests
// share them.
var shared struct {
	once sync.Once
	r    *Remote
}

// Shared starts the test binary's one Remote on first use (skipping tb as
// Need does) and returns it; a failed start fails every later caller too.
// TestMain calls StopShared after m.Run.
func Shared(tb testing.TB) *Remote {
	tb.Helper()
	Need(tb)
	shared.once.Do(func() { shared.r = Start(tb) })
	if shared.r == nil {
		tb.Fatal("the shared remote engine failed to start (see the first test's log)")
	}
	return shared.r
}

// StopShared stops what Shared started, if anything.
func StopShared() {
	if shared.r != nil {
		shared.r.Stop()
	}
}

// Start starts sshd, dockerd and the registry. Stop stops them.
func Start(tb testing.TB) *Remote {
	tb.Helper()
	Need(tb)
	dir, err := os.MkdirTemp("", "ferry-dk-")
	if err != nil {
		tb.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	r := &Remote{Dir: dir, tb: tb, RegUser: "deployer", RegPass: "reg-Pa55-" + randHex(8)}
	ok := false
	defer func() {
		if !ok {
			r.Stop()
		}
	}()
	if err := r.users(); err != nil {
		tb.Fatal(err)
	}
	if err := r.startDockerd(); err != nil {
		tb.Fatal(err)
	}
	if err := r.startSSHD(); err != nil {
		tb.Fatal(err)
	}
	if err := r.startRegistry(); err != nil {
		tb.Fatal(err)
	}
	ok = true
	return r
}

// URL is DOCKER_HOST for user.
func (r *Remote) URL(user string) string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d", user, r.SSHPort)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// NewKey returns a fresh ed25519 private key in OpenSSH PEM form and its
// authorized_keys line; with a passphrase, the PEM is encrypted.
func NewKey(passphrase string) (pemBytes []byte, authorized string) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	var blk *pem.Block
	var err error
	if passphrase == "" {
		blk, err = ssh.MarshalPrivateKey(priv, "ferry-test")
	} else {
		blk, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "ferry-test", []byte(passphrase))
	}
	if err != nil {
		panic(err)
	}
	pub, _ := ssh.NewPublicKey(priv.Public())
	return pem.EncodeToMemory(blk), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (r *Remote) users() error {
	key, auth := NewKey("")
	r.Key = key
	keys := filepath.Join(r.Dir, "keys")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		return err
	}
	for _, u := range []string{UserOK, UserNoSocket, UserNoDocker} {
		if _, err := user.Lookup(u); err != nil {
			if err := run("useradd", "-m", "-s", "/bin/sh", u); err != nil {
				return err
			}
		}
		// useradd makes a locked account, which sshd refuses.
		if err := run("usermod", "-p", "*", u); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(keys, u), []byte(auth+"\n"), 0o644); err != nil {
			return err
		}
	}
	return run("usermod", "-aG", "docker", UserOK)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (r *Remote) startSSHD() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	r.SSHPort = port
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	blk, _ := ssh.MarshalPrivateKey(hostPriv, "")
	hk := filepath.Join(r.Dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(hk, pem.EncodeToMemory(blk), 0o600); err != nil {
		return err
	}
	r.HostKey, _ = ssh.NewPublicKey(hostPriv.Public())
	r.KnownHosts = fmt.Sprintf("[127.0.0.1]:%d %s", port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(r.HostKey))))
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s/sshd.pid
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 100
MaxStartups 100:30:200
AuthorizedKeysFile %s/keys/%%u
AllowUsers %s %s %s
SetEnv DOCKER_HOST=unix://%s
Match User %s
  SetEnv PATH=/nonexistent DOCKER_HOST=unix://%s
`, port, hk, r.Dir, r.Dir, UserOK, UserNoSocket, UserNoDocker, r.DockerSock, UserNoDocker, r.DockerSock)
	conf := filepath.Join(r.Dir, "sshd_config")
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return err
	}
	os.MkdirAll("/run/sshd", 0o755)
	// -D: stay in the foreground, so the PID is ours to stop.
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-f", conf, "-E", filepath.Join(r.Dir, "sshd.log"))
	if err := cmd.Start(); err != nil {
		return err
	}
	r.procs = append(r.procs, cmd)
	return waitUntil(5*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "sshd on port "+strconv.Itoa(port))
}

func (r *Remote) startDockerd() error {
	r.DockerSock = filepath.Join(r.Dir, "docker.sock")
	for _, d := range []string{"data", "exec"} {
		os.MkdirAll(filepath.Join(r.Dir, d), 0o700)
	}
	logf, err := os.Create(filepath.Join(r.Dir, "dockerd.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--net", "--", "sh", "-c",
		fmt.Sprintf("ip link set lo up && exec dockerd --host unix://%s --data-root %s/data --exec-root %s/exec --pidfile %s/dockerd.pid",
			r.DockerSock, r.Dir, r.Dir, r.Dir))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	r.procs = append(r.procs, cmd)
	return waitUntil(20*time.Second, func() bool {
		_, err := r.Docker("version", "--format", "{{.Server.Version}}")
		return err == nil
	}, "dockerd")
}

func (r *Remote) startRegistry() error {
	// The same host:port on the host and inside the namespace (a free port
	// of the host): test binaries run in parallel, each with its Remote.
	port, err := freePort()
	if err != nil {
		return err
	}
	r.Registry = fmt.Sprintf("127.0.0.1:%d", port)
	hash, err := bcrypt.GenerateFromPassword([]byte(r.RegPass), bcrypt.MinCost)
	if err != nil {
		return err
	}
	ht := filepath.Join(r.Dir, "htpasswd")
	// gitlab-ci-token: seed 000 logs in as GitLab's registry expects; tests
	// give the job a token this registry accepts (TokenUser).
	lines := r.RegUser + ":" + string(hash) + "\n" + TokenUser + ":" + string(hash) + "\n"
	if err := os.WriteFile(ht, []byte(lines), 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s/registry
  delete:
    enabled: true
http:
  addr: %s
auth:
  htpasswd:
    realm: ferry-test
    path: %s
`, r.Dir, r.Registry, ht)
	conf := filepath.Join(r.Dir, "registry.yml")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(r.Dir, "registry.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	pid := r.procs[0].Process.Pid // dockerd (unshare exec'd sh exec'd dockerd)
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "--", "/usr/bin/docker-registry", "serve", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	r.procs = append(r.procs, cmd)
	// The host's docker CLI logs in client-side when it has no daemon (seed
	// 000 logs in before `docker context use`): the same registry name must
	// work on the host, so forward the host's port into the namespace.
	if err := r.forward(pid); err != nil {
		return err
	}
	// Ready when the daemon can log in to it (what the tests need anyway).
	return waitUntil(10*time.Second, func() bool { return r.adminLogin() == nil }, "registry")
}

// forward accepts on the host's r.Registry and connects each client to the
// same address inside dockerd's network namespace.
func (r *Remote) forward(pid int) error {
	l, err := net.Listen("tcp", r.Registry)
	if err != nil {
		return fmt.Errorf("registry forward: %w", err)
	}
	r.fwd = l
	ns := fmt.Sprintf("/proc/%d/ns/net", pid)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := dialInNetns(ns, r.Registry)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(up, c); done <- struct{}{} }()
				go func() { io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return nil
}

// dialInNetns dials from a thread moved into the namespace; the thread is
// never unlocked, so it exits with its goroutine and no other goroutine
// runs in that namespace. The socket stays in the namespace it was made in.
func dialInNetns(ns, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(ns)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, err}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func waitUntil(d time.Duration, cond func() bool, what string) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %s", what, d)
}

// Docker runs the host's docker CLI directly against the daemon's socket
// (not through SSH): the test's view of the remote state.
func (r *Remote) Docker(args ...string) (string, error) {
	cmd := exec.Command("docker", append([]string{"--host", "unix://" + r.DockerSock}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(r.Dir, "admin-docker"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// MustDocker is Docker that fails the test.
func (r *Remote) MustDocker(args ...string) string {
	r.tb.Helper()
	out, err := r.Docker(args...)
	if err != nil {
		r.tb.Fatal(err)
	}
	return out
}

// PushBusybox makes an image from busybox-static (docker import, offline)
// and pushes it to the registry as <registry>/<name>; returns the reference.
func (r *Remote) PushBusybox(name string) string {
	r.tb.Helper()
	rootfs := filepath.Join(r.Dir, "rootfs")
	if _, err := os.Stat(rootfs); err != nil {
		os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
		b, err := os.ReadFile("/bin/busybox")
		if err != nil {
			r.tb.Fatal(err)
		}
		os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), b, 0o755)
		for _, l := range []string{"sh", "sleep", "httpd", "cat", "echo", "ls"} {
			os.Symlink("busybox", filepath.Join(rootfs, "bin", l))
		}
	}
	local := "ferry-test/" + name
	cmd := exec.Command("sh", "-c", fmt.Sprintf(`tar -C %s -c . | docker --host unix://%s import -c 'CMD ["/bin/sh"]' - %s`, rootfs, r.DockerSock, local))
	if out, err := cmd.CombinedOutput(); err != nil {
		r.tb.Fatalf("docker import: %v: %s", err, out)
	}
	ref := r.Registry + "/" + name
	r.MustDocker("tag", local, ref)
	if err := r.adminLogin(); err != nil {
		r.tb.Fatal(err)
	}
	r.MustDocker("push", ref)
	r.MustDocker("rmi", ref, local)
	return ref
}

// adminLogin logs the test's own docker CLI in to the registry.
func (r *Remote) adminLogin() error {
	login := exec.Command("docker", "--host", "unix://"+r.DockerSock, "login", "-u", r.RegUser, "--password-stdin", r.Registry)
	login.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(r.Dir, "admin-docker"))
	login.Stdin = strings.NewReader(r.RegPass)
	if out, err := login.CombinedOutput(); err != nil {
		return fmt.Errorf("docker login: %v: %s", err, out)
	}
	return nil
}

// Stop stops everything (registry, sshd, dockerd) by PID, bounded, and
// removes the directory.
func (r *Remote) Stop() {
	if r.fwd != nil {
		r.fwd.Close()
	}
	for i := len(r.procs) - 1; i >= 0; i-- {
		stop(r.procs[i], 20*time.Second)
	}
	r.procs = nil
	// dockerd unmounts its layers on a clean stop; anything left mounted
	// would make RemoveAll fail, so say so instead of hiding it.
	// Stderr, not r.tb: Stop runs from TestMain, after the test that
	// started the engine has completed (its Logf would panic).
	if err := os.RemoveAll(r.Dir); err != nil {
		fmt.Fprintf(os.Stderr, "dockertest: remove %s: %v\n", r.Dir, err)
	}
}

func stop(cmd *exec.Cmd, wait time.Duration) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
	}
}

// ComposeV2Var names a prebuilt `docker compose` v2 CLI plugin to use
// instead of the one `make compose` builds.
const ComposeV2Var = "FERRY_COMPOSE_V2"

// ComposeV2 returns the `docker compose` v2 CLI plugin the tests use: the
// one `make compose` (scripts/compose.sh, run by `make tools`) builds into the
// repository's bin/cli-plugins, or $FERRY_COMPOSE_V2. Debian 12 does not
// package it. Missing, it fails the test in CI (CI=true: the build step
// is broken, and a skip would hide it) and skips it loudly elsewhere.
func ComposeV2(tb testing.TB) string {
	tb.Helper()
	p := os.Getenv(ComposeV2Var)
	if p == "" {
		p = filepath.Join(ferrybuild.RepoRoot(), "bin", "cli-plugins", "docker-compose")
	}
	fi, err := os.Stat(p)
	if err == nil && fi.Mode()&0o111 == 0 {
		err = fmt.Errorf("not executable")
	}
	if err != nil {
		msg := fmt.Sprintf("docker compose v2 plugin %s missing (%v): build it with `make compose` (`make tools` does) or set %s", p, err, ComposeV2Var)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip("SKIPPED: " + msg)
	}
	return p
}

// InstallPlugin installs plugin as <dockerConfig>/cli-plugins/docker-compose,
// where the docker CLI finds `docker compose`: a hard link, or a copy
// across file systems, as an admin installs it (not a symlink: the job
// would then run the file at the link's target, and a test of what the job
// may run inside ~/.docker would prove nothing).
func InstallPlugin(tb testing.TB, dockerConfig, plugin string) {
	tb.Helper()
	d := filepath.Join(dockerConfig, "cli-plugins")
	if err := os.MkdirAll(d, 0o755); err != nil {
		tb.Fatal(err)
	}
	dst := filepath.Join(d, "docker-compose")
	if err := os.Link(plugin, dst); err == nil || os.IsExist(err) {
		return
	}
	proctest.CopyExecutable(tb, plugin, dst)
}
