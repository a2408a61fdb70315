package stages_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/ferry-ci/ferry/internal/proctest"
)

// 19.0's prepare_timeout (and any cancel or job timeout during prepare) sends
// SIGTERM to the executor's process group, then SIGKILL after
// graceful_kill_timeout. These tests stop a real `ferry prepare` at points
// where it waits on the network — found without timing: a local listener
// that accepts and never answers tells the test that ferry has got there —
// and check that nothing of the job is left on the host, and that the next
// job is unaffected.

// silentListener accepts connections and never writes; accepted counts them.
func silentListener(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = &atomic.Int32{}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			accepted.Add(1)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), accepted
}

// deployKey is a fresh ed25519 key as the job's SSH_PRIVATE_KEY (base64 PEM).
func deployKey(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(pem.EncodeToMemory(blk))
}

// interruptPoint sets up a job whose prepare blocks at a named point.
type interruptPoint struct {
	name  string
	setup func(t *testing.T, j *fakeJob, addr string)
}

var interruptPoints = []interruptPoint{
	{"starting the Docker holder", func(t *testing.T, j *fakeJob, addr string) {
		j.vars["DOCKER_HOST"] = "ssh://deploy@" + addr
		j.vars["SSH_PRIVATE_KEY"] = deployKey(t)
		j.args = append(j.args, "--docker-allow-tofu", "--docker-preflight-timeout=60s")
	}},
	{"the Kubernetes API preflight", func(t *testing.T, j *fakeJob, addr string) {
		j.vars["KUBE_URL"] = "https://" + addr
		j.vars["KUBE_TOKEN"] = "interrupt-token-" + uniqueSleep()
		for i, a := range j.args {
			if a == "--kube-sources=none" {
				j.args[i] = "--kube-sources=cluster-vars"
			}
		}
		j.args = append(j.args, "--kube-preflight-timeout=60s")
	}},
}

// leftovers lists what a job left under the state root: its job dirs,
// sockets anywhere, and unpack temporaries of the engine.
func leftovers(stateDir string) []string {
	var out []string
	filepath.WalkDir(stateDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(stateDir, p)
		switch {
		case d.Type()&fs.ModeSocket != 0,
			strings.HasPrefix(d.Name(), ".unpack-"),
			filepath.Dir(rel) == "jobs":
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestPrepareInterrupted(t *testing.T) {
	for _, pt := range interruptPoints {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			t.Run(pt.name+"/"+sig.String(), func(t *testing.T) {
				addr, accepted := silentListener(t)
				j := newJob(t, "")
				withShim(j)
				pt.setup(t, j, addr)
				cmd := j.cmd("prepare")
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
				if !waitFor(3*time.Minute, func() bool { return accepted.Load() > 0 || len(exited) > 0 }) || len(exited) > 0 {
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					t.Fatalf("prepare never reached %s:\n%s", pt.name, out.String())
				}
				holderDir := filepath.Join(j.state().Dir(), "docker")
				// The runner signals the whole process group.
				start := time.Now()
				syscall.Kill(-cmd.Process.Pid, sig)
				var err error
				select {
				case err = <-exited:
				case <-time.After(20 * time.Second):
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					t.Fatalf("prepare still runs 20s after %v:\n%s", sig, out.String())
				}
				code := proctest.ExitCode(t, err)
				if sig == syscall.SIGTERM {
					if code != 2 || time.Since(start) > 10*time.Second {
						t.Errorf("prepare after SIGTERM: exit %d after %v, want 2 (system failure) at once\n%s", code, time.Since(start), out.String())
					}
					if !strings.Contains(out.String(), "prepare interrupted (SIGTERM)") {
						t.Errorf("prepare does not say it was interrupted:\n%s", out.String())
					}
					// Nothing left before cleanup_exec even runs.
					if l := leftovers(j.stateDir); len(l) > 0 {
						t.Errorf("after SIGTERM, before cleanup_exec: left %v", l)
					}
				}
				// The runner always runs cleanup_exec after a failed prepare.
				if r := j.ferry("cleanup"); r.code != 0 {
					t.Errorf("cleanup: %d %s %s", r.code, r.stdout, r.stderr)
				}
				if l := leftovers(j.stateDir); len(l) > 0 {
					t.Errorf("after cleanup_exec: left %v", l)
				}
				// cleanup signals the holder and does not wait (c52b46a);
				// a holder still starting ends its SSH handshake on the
				// signal (sshdial: the silent server here held it for the
				// whole 15 s preflight timeout before).
				if !waitFor(5*time.Second, func() bool { return len(procsWithArg(holderDir)) == 0 }) {
					t.Errorf("a Docker holder of the job survived 5 s after cleanup: %v", procsWithArg(holderDir))
				}
				// The next job on the host: same state root, ordinary work.
				next := newJob(t, "")
				next.stateDir = j.stateDir
				next.args[0] = "--state-dir=" + j.stateDir
				next.mustPrepare()
				if r := next.ferry("run", next.script("echo next-job-ok"), "build_script"); r.code != 0 || !strings.Contains(r.stdout, "next-job-ok") {
					t.Errorf("next job: %d %s %s", r.code, r.stdout, r.stderr)
				}
				if r := next.ferry("cleanup"); r.code != 0 {
					t.Errorf("next cleanup: %d %s", r.code, r.stderr)
				}
				if l := leftovers(j.stateDir); len(l) > 0 {
					t.Errorf("after the next job: left %v", l)
				}
			})
		}
	}
}
