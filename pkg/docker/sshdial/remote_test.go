package sshdial_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/pkg/docker/sshdial"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dockertest.StopShared()
	os.Exit(code)
}

// need starts the package's one remote engine on first use.
func need(t *testing.T) *dockertest.Remote { return dockertest.Shared(t) }

func config(t *testing.T, r *dockertest.Remote, user string, key []byte, known string) sshdial.Config {
	t.Helper()
	target, err := sshdial.ParseURL(r.URL(user))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sshdial.ParseKey(key, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(kh, []byte(known+"\n"), 0o600)
	return sshdial.Config{Target: target, Signers: []ssh.Signer{signer}, KnownHostsFiles: []string{kh}, Timeout: 5 * time.Second,
		Names: sshdial.Names{Host: "DOCKER_HOST", Key: "SSH_PRIVATE_KEY", KnownHosts: "SSH_KNOWN_HOSTS"}}
}

// TestProbeRealEngine: the preflight line's facts come from the remote daemon.
func TestProbeRealEngine(t *testing.T) {
	r := need(t)
	c, err := sshdial.Dial(context.Background(), config(t, r, dockertest.UserOK, r.Key, r.KnownHosts))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e, err := sshdial.Probe(context.Background(), c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(r.MustDocker("version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"))
	if got := e.Version + " " + e.APIVersion; got != want {
		t.Fatalf("probe says %q, the daemon %q", got, want)
	}
	if e.Swarm != "not a swarm member" {
		t.Fatalf("swarm: %q", e.Swarm)
	}
	// Many docker connections share the one SSH connection.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := sshdial.Probe(context.Background(), c, 10*time.Second); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestConnectionErrors: every cause of point 4 is told apart, names the
// variable, and says the true cause.
func TestConnectionErrors(t *testing.T) {
	r := need(t)
	otherKey, _ := dockertest.NewKey("")
	_, otherHostPub := dockertest.NewKey("")
	changed := fmt.Sprintf("[127.0.0.1]:%d %s", r.SSHPort, otherHostPub)
	for _, tc := range []struct {
		name  string
		cfg   sshdial.Config
		cause sshdial.Cause
		want  []string
	}{
		{"unknown host key", config(t, r, dockertest.UserOK, r.Key, "# nothing"), sshdial.CauseUnknownHostKey,
			[]string{"SSH_KNOWN_HOSTS: unknown host key", fmt.Sprintf("[127.0.0.1]:%d", r.SSHPort), ssh.FingerprintSHA256(r.HostKey)}},
		{"changed host key", config(t, r, dockertest.UserOK, r.Key, changed), sshdial.CauseChangedHostKey,
			[]string{"SSH_KNOWN_HOSTS: host key CHANGED", ssh.FingerprintSHA256(r.HostKey), "line 1"}},
		{"key refused", config(t, r, dockertest.UserOK, otherKey, r.KnownHosts), sshdial.CauseKeyRefused,
			[]string{"SSH_PRIVATE_KEY: key refused by " + dockertest.UserOK}},
		{"no docker on PATH", config(t, r, dockertest.UserNoDocker, r.Key, r.KnownHosts), sshdial.CauseNoDocker,
			[]string{"DOCKER_HOST: no `docker` on the remote PATH of " + dockertest.UserNoDocker, "not found"}},
		{"socket permission", config(t, r, dockertest.UserNoSocket, r.Key, r.KnownHosts), sshdial.CauseSocketDenied,
			[]string{"DOCKER_HOST: " + dockertest.UserNoSocket, "cannot open the Docker daemon's socket", "connect: permission denied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := dialProbe(tc.cfg)
			assertCause(t, err, tc.cause, tc.want...)
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		cfg := config(t, r, dockertest.UserOK, r.Key, r.KnownHosts)
		cfg.Target.Port = 1
		start := time.Now()
		err := dialProbe(cfg)
		assertCause(t, err, sshdial.CauseUnreachable, "DOCKER_HOST: cannot reach 127.0.0.1:1", "connection refused")
		if time.Since(start) > 5*time.Second {
			t.Fatalf("took %s", time.Since(start))
		}
	})
}

func dialProbe(cfg sshdial.Config) error {
	c, err := sshdial.Dial(context.Background(), cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = sshdial.Probe(context.Background(), c, 10*time.Second)
	return err
}

func assertCause(t *testing.T, err error, cause sshdial.Cause, want ...string) {
	t.Helper()
	var se *sshdial.Error
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T), want *sshdial.Error", err, err)
	}
	if se.Cause != cause {
		t.Fatalf("cause %d, want %d: %v", se.Cause, cause, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "ferry: ") {
		t.Fatalf("not one ferry line: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q lacks %q", msg, w)
		}
	}
	t.Logf("%s", msg)
}
