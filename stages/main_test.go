package stages_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/asuser"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/proctest"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// ferryBin is the ferry binary built once for the whole package.
var ferryBin string

func TestMain(m *testing.M) {
	if asuser.IsChild() || os.Getenv("FERRY_ISO_ROLE") != "" {
		// A test body re-run as an unprivileged user (asuser, or an
		// isolation_test.go helper): it gets its binaries from its
		// parent and builds nothing.
		os.Exit(m.Run())
	}
	var err error
	if ferryBin, err = ferrybuild.Shared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	ferrybuild.RemoveShared()
	os.Exit(code)
}

// fakeJob is one job as a runner would present it to ferry: a payload file,
// CUSTOM_ENV_* variables and the exit-code variables.
type fakeJob struct {
	t        testing.TB
	base     string
	id       string
	stateDir string
	builds   string
	project  string
	payload  string
	vars     map[string]string // job variables
	extra    []string          // extra process variables
	args     []string          // flags given to every call

	token   string // the payload's job token, distinct per fake job
	timeout int64
	pvars   []jobenv.Variable
}

// fakeIDs hands out job ids to fake jobs that ask for none: every fake
// payload has its own id and token, so no test can pass only because ferry
// read the id from CUSTOM_ENV_CI_JOB_ID.
var fakeIDs atomic.Int64

func init() { fakeIDs.Store(int64(700000 + os.Getpid()%100000)) }

// newJob makes a fake job whose payload id (and CI_JOB_ID) is id, or a
// fresh one when id is not a positive number.
func newJob(t testing.TB, id string) *fakeJob {
	t.Helper()
	return newJobAt(t, id, t.TempDir())
}

// newJobAt is newJob with the job's HOME, state, builds and cache dirs in
// base.
func newJobAt(t testing.TB, id, base string) *fakeJob {
	t.Helper()
	if n, err := atoi(id); err != nil || n <= 0 {
		id = fmt.Sprint(fakeIDs.Add(1))
	}
	j := &fakeJob{t: t, base: base, id: id,
		stateDir: filepath.Join(base, "state"),
		builds:   filepath.Join(base, "builds"),
		payload:  filepath.Join(base, "job_response.json"),
	}
	j.project = filepath.Join(j.builds, "tok12345", "0", "group", "proj")
	j.vars = map[string]string{
		"CI_JOB_ID":                id,
		"CI_SERVER_URL":            "https://gitlab.example.com",
		"CI_PROJECT_DIR":           j.project,
		"CI_RUNNER_SHORT_TOKEN":    "tok12345",
		"CI_CONCURRENT_PROJECT_ID": "0",
		"CI_CONCURRENT_ID":         "0",
	}
	j.token = fmt.Sprintf("glcbt-fake-%s-%d", id, time.Now().UnixNano())
	j.writePayload(3600, nil)
	j.args = []string{"--state-dir=" + j.stateDir, "--builds-dir=" + j.builds, "--cache-dir=" + filepath.Join(base, "cache"), "--grace-period=2s", "--kube-sources=none",
		// The core tests run without the engine; engine_test.go covers the
		// handoff (and every prepare would unpack ~60 MB otherwise).
		"--kubectl-shim=false"}
	return j
}

// writePayload writes JOB_RESPONSE_FILE in the runner's field order (id
// and token first) with the job's own id and token.
func (j *fakeJob) writePayload(timeout int64, vars []jobenv.Variable) {
	j.timeout, j.pvars = timeout, vars
	id, _ := atoi(j.id)
	jr := struct {
		ID         int               `json:"id"`
		Token      string            `json:"token"`
		RunnerInfo map[string]any    `json:"runner_info"`
		Variables  []jobenv.Variable `json:"variables"`
	}{id, j.token, map[string]any{"timeout": timeout}, vars}
	b, _ := json.Marshal(jr)
	if err := os.WriteFile(j.payload, b, 0o600); err != nil {
		j.t.Fatal(err)
	}
}

// setID gives the job another id (payload and CI_JOB_ID) and token.
func (j *fakeJob) setID(id int) {
	j.id = fmt.Sprint(id)
	j.vars["CI_JOB_ID"] = j.id
	j.token = fmt.Sprintf("glcbt-fake-%d-%d", id, time.Now().UnixNano())
	j.writePayload(j.timeout, j.pvars)
}

func (j *fakeJob) environ() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + j.base,
		"BUILD_FAILURE_EXIT_CODE=1",
		"SYSTEM_FAILURE_EXIT_CODE=2",
		"JOB_RESPONSE_FILE=" + j.payload,
		"BUILD_EXIT_CODE_FILE=" + filepath.Join(j.base, "exit_code"),
		"TMPDIR=" + j.base,
	}
	for k, v := range j.vars {
		env = append(env, "CUSTOM_ENV_"+k+"="+v)
	}
	env = append(env, ferrybuild.CoverEnv()...)
	return append(env, j.extra...)
}

type result struct {
	stdout, stderr string
	code           int
}

func (j *fakeJob) cmd(sub string, args ...string) *exec.Cmd {
	all := append([]string{sub}, j.args...)
	all = append(all, args...)
	c := exec.Command(ferryBin, all...)
	c.Env = j.environ()
	c.Dir = j.base
	return c
}

func run(t testing.TB, c *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	code := proctest.ExitCode(t, c.Run())
	return result{out.String(), errb.String(), code}
}

func (j *fakeJob) ferry(sub string, args ...string) result {
	j.t.Helper()
	return run(j.t, j.cmd(sub, args...))
}

func (j *fakeJob) mustPrepare() {
	j.t.Helper()
	if r := j.ferry("prepare"); r.code != 0 {
		j.t.Fatalf("prepare: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// script writes a stage script file and returns its path.
func (j *fakeJob) script(body string) string {
	j.t.Helper()
	f, err := os.CreateTemp(j.base, "script-*.sh")
	if err != nil {
		j.t.Fatal(err)
	}
	if _, err := f.WriteString("#!/usr/bin/env bash\n" + body + "\n"); err != nil {
		j.t.Fatal(err)
	}
	f.Close()
	return f.Name()
}

func (j *fakeJob) state() *jobstate.State {
	j.t.Helper()
	id, err := jobenv.FromEnviron(j.environ()).Identity("")
	if err != nil {
		j.t.Fatal(err)
	}
	st, err := jobstate.Open(j.stateDir, id)
	if err != nil {
		j.t.Fatal(err)
	}
	return st
}

// procsWithArg lists live processes whose command line has arg.
func procsWithArg(arg string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
				if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
					break // a zombie is dead
				}
				out = append(out, e.Name())
				break
			}
		}
	}
	return out
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

func uniqueSleep() string {
	return fmt.Sprintf("%d", 100000+time.Now().UnixNano()%800000)
}

var _ = syscall.SIGTERM

func itoa(i int) string { return fmt.Sprint(i) }

func atoi(s string) (int, error) {
	var n int
	_, err := fmt.Sscan(s, &n)
	return n, err
}
