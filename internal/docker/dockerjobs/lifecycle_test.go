package dockerjobs_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/asuser"
	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// TestSocketServesOnlyItsJobAsUser plays the hostile job, with the runner,
// its jobs and the holders running as an unprivileged user (root ignores
// file permissions; the peer checks must hold without it): job B, on the
// same runner and user, finds job A's socket and connects to it, directly
// and from a setsid'd process; a process outside any job (the test) tries
// too. All are refused; A keeps working and its log names the refusals.
func TestSocketServesOnlyItsJobAsUser(t *testing.T) {
	var spec asuser.Spec
	if !asuser.IsChild() {
		r := need(t)
		spec = asuser.Spec{User: "ferry-docker-1", Files: map[string]string{"ferry": ferryBin}, Values: map[string]string{}}
		for _, v := range ferryVars(r, dockertest.UserOK) {
			spec.Values[v.Key] = v.Value
		}
	}
	asuser.Run(t, spec, func(t *testing.T, env asuser.Env) {
		ferryBin = env.Files["ferry"]
		vars := []runnerdriver.Variable{
			{Key: "DOCKER_HOST", Value: env.Values["DOCKER_HOST"]},
			{Key: "SSH_PRIVATE_KEY", Value: env.Values["SSH_PRIVATE_KEY"], Masked: true},
			{Key: "SSH_KNOWN_HOSTS", Value: env.Values["SSH_KNOWN_HOSTS"]},
		}
		socketAttack(t, newEnv(t), vars)
	})
}

// socketAttack: job A uses its engine and waits; job B finds A's socket
// and tries it; this process (outside any job) tries too. The jobs write
// nothing outside their own dirs (a sandbox would stop them): A prints its
// socket, the test hands it to B in a file B can read, B prints what its
// setsid'd process got.
func socketAttack(t *testing.T, e *env, vars []runnerdriver.Variable) {
	// The hand-over files live in a dir that exists before the jobs start:
	// the sandbox grants read on what is there when a stage starts (the
	// siblings of the hidden builds root), not on files made later beside it.
	handoff := filepath.Join(e.base, "handoff")
	if err := os.MkdirAll(handoff, 0o755); err != nil {
		t.Fatal(err)
	}
	hostFile, goFile := filepath.Join(handoff, "a-host"), filepath.Join(handoff, "go")
	wait := func(f string) string {
		return `for i in $(seq 600); do [ -e ` + f + ` ] && break; sleep 0.1; done; [ -e ` + f + ` ]`
	}
	sockRe := regexp.MustCompile(`(?m)^A-SOCKET=(/\S+)$`)
	var once, bOnce sync.Once
	sockCh, bDone := make(chan string, 1), make(chan struct{})
	var a, b *runnerdriver.JobResult
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a = e.run(runnerdriver.Job{Name: "a", Variables: vars, Script: []string{
			"docker ps > /dev/null",
			// Printed so that the echoed command line does not match.
			`printf 'A-%s=%s\n' SOCKET "${DOCKER_HOST#unix://}"`,
			wait(goFile),
			"docker ps > /dev/null && echo A-STILL-SERVED",
		}, OnLog: func(log []byte) bool {
			if m := sockRe.FindSubmatch(log); m != nil {
				once.Do(func() {
					os.WriteFile(hostFile+".tmp", m[1], 0o644)
					os.Rename(hostFile+".tmp", hostFile)
					sockCh <- string(m[1])
				})
			}
			return false
		}})
	}()
	go func() {
		defer wg.Done()
		b = e.run(runnerdriver.Job{Name: "b", Script: []string{
			wait(hostFile),
			`sock=$(cat ` + hostFile + `)`,
			// The markers are printed as S+TOLEN so that the echoed command
			// lines do not contain them.
			`if docker -H unix://$sock ps; then printf 'S%s\n' TOLEN; fi`,
			`setsid -f sh -c "docker -H unix://$sock ps && printf 'S%s\n' TOLEN-SETSID" > "$CI_PROJECT_DIR/b-setsid" 2>&1`,
			`sleep 1; cat "$CI_PROJECT_DIR/b-setsid"`,
			// Even a process that names A's JOB_RESPONSE_FILE itself is below B's ferry run.
			`if env -i JOB_RESPONSE_FILE=/anything /usr/bin/docker -H unix://$sock ps; then printf 'S%s\n' TOLEN-ENV; fi`,
			`printf 'B-%s\n' DONE`,
		}, OnLog: func(log []byte) bool {
			if strings.Contains(string(log), "B-DONE") {
				bOnce.Do(func() { close(bDone) })
			}
			return false
		}})
	}()
	// A process outside every job.
	var sock string
	select {
	case sock = <-sockCh:
	case <-time.After(90 * time.Second):
		t.Fatal("job A never printed its socket")
	}
	if c, err := net.Dial("unix", strings.TrimSpace(sock)); err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"))
		if line, _ := bufio.NewReader(c).ReadString('\n'); line != "" {
			t.Errorf("a process outside the job got an answer: %q", line)
		}
		c.Close()
	} else {
		t.Logf("dial from outside: %v", err)
	}
	select {
	case <-bDone:
	case <-time.After(90 * time.Second):
		t.Error("job B did not finish its attempts")
	}
	os.WriteFile(goFile, nil, 0o644)
	wg.Wait()
	mustSucceed(t, a)
	mustSucceed(t, b)
	if strings.Contains(b.Log, "STOLEN") {
		t.Fatalf("job B used job A's socket:\n%s", b.Log)
	}
	if !strings.Contains(a.Log, "A-STILL-SERVED") {
		t.Fatalf("job A lost its engine:\n%s", a.Log)
	}
	// Every attempt that reached the socket is named in A's log: the
	// outsider's always; B's three unless a sandbox (Landlock ABI 9 scopes
	// unix socket paths) stopped them before they reached it.
	if !strings.Contains(a.Log, fmt.Sprintf("refused a connection from pid %d ", os.Getpid())) {
		t.Fatalf("job A's log does not name the outsider (pid %d):\n%s", os.Getpid(), a.Log)
	}
	n := strings.Count(a.Log, "refused a connection from pid")
	t.Logf("%d refusals named in job A's log", n)
	if n < 4 && n != 1 { // the docker CLI connects more than once per command
		t.Fatalf("job A's log names %d refusals, want 4+ (B, B's setsid, B's env -i, the outsider) or 1 under a sandbox:\n%s", n, a.Log)
	}
}

// rawJob drives ferry's stages by hand (no driver), for the lifecycle cases
// where the runner itself dies.
type rawJob struct {
	t       testing.TB
	e       *env
	environ []string
	args    []string
}

func newRawJob(t testing.TB, e *env, r *dockertest.Remote, id string) *rawJob {
	base := filepath.Join(e.base, "raw-"+id)
	os.MkdirAll(base, 0o700)
	payload := filepath.Join(base, "job_response.json")
	// ferry names a job by its payload's id and token (never CI_JOB_ID):
	// each raw job has its own.
	n, _ := strconv.Atoi(id)
	b, _ := json.Marshal(map[string]any{"id": n, "token": "glcbt-raw-" + id, "runner_info": map[string]any{"timeout": 3600},
		"variables": []map[string]any{{"key": "SSH_PRIVATE_KEY", "value": base64.StdEncoding.EncodeToString(r.Key), "masked": true}}})
	os.WriteFile(payload, b, 0o600)
	project := filepath.Join(base, "builds", "p")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.home, "BUILD_FAILURE_EXIT_CODE=1", "SYSTEM_FAILURE_EXIT_CODE=2",
		"JOB_RESPONSE_FILE=" + payload, "BUILD_EXIT_CODE_FILE=" + filepath.Join(base, "exit"), "TMPDIR=" + base}
	vars := map[string]string{"CI_JOB_ID": id, "CI_SERVER_URL": "https://gitlab.example.com", "CI_PROJECT_DIR": project,
		"CI_RUNNER_SHORT_TOKEN": "tok12345", "CI_CONCURRENT_PROJECT_ID": "0", "CI_CONCURRENT_ID": "0"}
	for _, v := range ferryVars(r, dockertest.UserOK) {
		vars[v.Key] = v.Value
	}
	for k, v := range vars {
		env = append(env, "CUSTOM_ENV_"+k+"="+v)
	}
	return &rawJob{t: t, e: e, environ: env, args: []string{"--state-dir=" + e.state, "--builds-dir=" + filepath.Join(base, "builds"), "--kube-sources=none", "--kubectl-shim=false"}}
}

func (j *rawJob) cmd(sub string, extra ...string) *exec.Cmd {
	c := exec.Command(ferryBin, append(append([]string{sub}, j.args...), extra...)...)
	c.Env = j.environ
	return c
}

func waitHolders(t *testing.T, root string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if h := holders(root); len(h) >= n {
			return h
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no holder under %s", root)
	return nil
}

// TestHolderLifecycle: the holder lives from prepare to cleanup, and ends
// (removing its socket and the job's DOCKER_CONFIG) when cleanup runs, when
// the stale sweep removes its job's directory, and when the runner dies.
func TestHolderLifecycle(t *testing.T) {
	r := need(t)
	e := newEnv(t)
	// A holder that saw its runner die may still be removing its own
	// directory when the last subtest ends (the subtests assert it goes):
	// remove the state dir until it stays removed, before t.TempDir's own
	// cleanup fails on a directory that was not empty yet.
	t.Cleanup(func() {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if os.RemoveAll(e.state) == nil {
				return
			}
		}
	})
	dockerDirs := func() []string {
		m, _ := filepath.Glob(filepath.Join(e.state, "jobs", "*", "docker"))
		return m
	}
	t.Run("cleanup", func(t *testing.T) {
		j := newRawJob(t, e, r, "7001")
		if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
			t.Fatalf("prepare: %v\n%s", err, out)
		}
		waitHolders(t, e.base, 1)
		start := time.Now()
		if out, err := j.cmd("cleanup").CombinedOutput(); err != nil {
			t.Fatalf("cleanup: %v\n%s", err, out)
		}
		// The job's socket and DOCKER_CONFIG are gone when cleanup
		// returns; the holder ends on its own shortly after (cleanup
		// does not wait for its release of the job's locks), within
		// its bound (holder.shutdownBudget, 5 s) whatever the engine does.
		if d := dockerDirs(); len(d) > 0 {
			t.Fatalf("left behind: %v", d)
		}
		waitNoHolders(t, e.base, 5*time.Second)
		t.Logf("holder ended %s after cleanup started", time.Since(start).Round(time.Millisecond))
	})
	t.Run("stale sweep", func(t *testing.T) {
		j := newRawJob(t, e, r, "7002")
		if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
			t.Fatalf("prepare: %v\n%s", err, out)
		}
		waitHolders(t, e.base, 1)
		dirs := dockerDirs()
		if len(dirs) != 1 {
			t.Fatalf("docker dirs: %v", dirs)
		}
		// What the sweep does to a stale job: its directory goes.
		os.RemoveAll(filepath.Dir(dirs[0]))
		waitNoHolders(t, e.base, 5*time.Second)
		j.cmd("cleanup").Run()
	})
	t.Run("runner dies", func(t *testing.T) {
		j := newRawJob(t, e, r, "7003")
		// The "runner": a process that runs prepare, then lives on, then is
		// SIGKILLed. Like gitlab-runner, it has no JOB_RESPONSE_FILE itself:
		// only its executor call gets one.
		var runnerEnv, jrf []string
		for _, kv := range j.environ {
			if strings.HasPrefix(kv, "JOB_RESPONSE_FILE=") {
				jrf = append(jrf, kv)
			} else {
				runnerEnv = append(runnerEnv, kv)
			}
		}
		runner := exec.Command("sh", append([]string{"-c", `env "$0" "$@" && exec sleep 120`, jrf[0], ferryBin, "prepare"}, j.args...)...)
		runner.Env = runnerEnv
		if err := runner.Start(); err != nil {
			t.Fatal(err)
		}
		waitHolders(t, e.base, 1)
		time.Sleep(200 * time.Millisecond)
		runner.Process.Kill()
		runner.Wait()
		waitNoHolders(t, e.base, 3*time.Second)
		if d := dockerDirs(); len(d) > 0 {
			t.Fatalf("the holder left its directory (socket, DOCKER_CONFIG): %v", d)
		}
		j.cmd("cleanup").Run()
	})
}
