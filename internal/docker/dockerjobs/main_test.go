package dockerjobs_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

var (
	ferryBin  string
	ferryOnce sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	dockertest.StopShared()
	ferrybuild.RemoveShared()
	os.Exit(code)
}

// need starts the one remote engine and builds ferry on first use.
func need(t testing.TB) *dockertest.Remote {
	t.Helper()
	dockertest.Need(t)
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Skip("SKIPPED: docker-compose (v1) missing: install docker-compose python3-paramiko (`make tools` does)")
	}
	ferryOnce.Do(func() {
		var err error
		if ferryBin, err = ferrybuild.Shared(); err != nil {
			t.Fatal(err)
		}
	})
	if ferryBin == "" {
		t.Fatal("building ferry failed in an earlier test")
	}
	return dockertest.Shared(t)
}

// env is one runner host: its user's HOME (with ~/.docker and ~/.ssh when
// a test sets up the hand-made way) and ferry's state root.
type env struct {
	t     *testing.T
	base  string
	home  string
	state string
	d     *runnerdriver.Driver
}

func newEnv(t *testing.T, extraArgs ...string) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{t: t, base: base, home: filepath.Join(base, "home"), state: filepath.Join(base, "state")}
	os.MkdirAll(e.home, 0o700)
	// Hand-over files between the test and its jobs (socketAttack): made
	// before any job starts, readable by jobs under a private /tmp too.
	os.MkdirAll(filepath.Join(base, "handoff"), 0o755)
	d, err := runnerdriver.New(runnerdriver.Config{
		SandboxReadable: []string{filepath.Join(base, "handoff")},
		FerryBinary:     ferryBin,
		BaseDir:         filepath.Join(base, "driver"),
		ExtraArgs:       append([]string{"--state-dir=" + e.state, "--kube-sources=none", "--kubectl-shim=false"}, extraArgs...),
		Env:             []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.home, "USER=root", "LANG=C.UTF-8"},
		PrepareAttempts: 1,
		StepScript:      true,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	return e
}

// ferryVars are the variables of the ferry way for user.
func ferryVars(r *dockertest.Remote, user string) []runnerdriver.Variable {
	return []runnerdriver.Variable{
		{Key: "DOCKER_HOST", Value: r.URL(user)},
		{Key: "SSH_PRIVATE_KEY", Value: base64.StdEncoding.EncodeToString(r.Key), Masked: true},
		{Key: "SSH_KNOWN_HOSTS", Value: r.KnownHosts},
	}
}

func (e *env) run(job runnerdriver.Job) *runnerdriver.JobResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res := e.d.RunJob(ctx, job)
	return res
}

func mustSucceed(t *testing.T, res *runnerdriver.JobResult) {
	t.Helper()
	if !res.Succeeded() {
		t.Fatalf("job %s: %s (%s, exit %d)\n%s\nsystem log:\n%s", res.Name, res.Status, res.FailureReason, res.ScriptExitCode, res.Log, res.SystemLog)
	}
}

// secretsOf are the planted secrets a test scans for: the key (whole, its
// base64, each body line), the registry password and the auth value docker
// login derives from it.
func secretsOf(r *dockertest.Remote, users ...string) []string {
	s := []string{base64.StdEncoding.EncodeToString(r.Key), strings.TrimSpace(string(r.Key)), r.RegPass}
	for _, l := range strings.Split(strings.TrimSpace(string(r.Key)), "\n") {
		if !strings.HasPrefix(l, "-----") {
			s = append(s, l)
		}
	}
	for _, u := range users {
		s = append(s, base64.StdEncoding.EncodeToString([]byte(u+":"+r.RegPass)))
	}
	return s
}

// assertNoSecrets fails when a planted secret is in a job's log or system
// log, or in any file under the given directories.
func assertNoSecrets(t *testing.T, secrets []string, res []*runnerdriver.JobResult, dirs ...string) {
	t.Helper()
	for _, r := range res {
		for _, s := range secrets {
			if strings.Contains(r.Log, s) || strings.Contains(r.SystemLog, s) {
				t.Errorf("job %s: secret %.12s... in the log", r.Name, s)
			}
		}
	}
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() || !de.Type().IsRegular() {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, s := range secrets {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("secret %.12s... on disk in %s", s, p)
				}
			}
			return nil
		})
	}
}

// holders lists live ferry docker-holder processes whose directory is
// under root.
func holders(root string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		a := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(a) == 3 && a[1] == "docker-holder" && strings.HasPrefix(a[2], root) {
			st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
			if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] != 'Z' {
				out = append(out, e.Name()+" "+a[2])
			}
		}
	}
	return out
}

func waitNoHolders(t *testing.T, root string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for len(holders(root)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if h := holders(root); len(h) > 0 {
		t.Fatalf("holder(s) still running after %s: %v", d, h)
	}
}

var _ = fmt.Sprintf

func contextTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 3*time.Minute)
}
