package stages_test

import (
	"encoding/base64"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/stages"
)

func TestConfigJSON(t *testing.T) {
	j := newJob(t, "101")
	r := j.ferry("config")
	if r.code != 0 {
		t.Fatalf("config: exit %d: %s", r.code, r.stderr)
	}
	var c stages.ConfigOutput
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil {
		t.Fatalf("config JSON: %v\n%s", err, r.stdout)
	}
	if want := filepath.Join(j.builds, "tok12345", "0"); c.BuildsDir != want {
		t.Errorf("builds_dir %q, want %q", c.BuildsDir, want)
	}
	if c.CacheDir != filepath.Join(j.base, "cache") || c.BuildsDirIsShared || c.Shell != "bash" ||
		c.Driver.Name != "ferry" || c.Driver.Version == "" || c.Hostname == "" {
		t.Errorf("config %+v", c)
	}
	if c.JobEnv["FERRY_STATE_DIR"] != j.stateDir {
		t.Errorf("job_env %v, want FERRY_STATE_DIR=%s", c.JobEnv, j.stateDir)
	}

	// Another concurrent job of the same project builds elsewhere.
	j.vars["CI_CONCURRENT_PROJECT_ID"] = "1"
	var c2 stages.ConfigOutput
	json.Unmarshal([]byte(j.ferry("config").stdout), &c2)
	if c2.BuildsDir == c.BuildsDir || c2.BuildsDir != filepath.Join(j.builds, "tok12345", "1") {
		t.Errorf("builds_dir for concurrent project id 1: %q (id 0: %q)", c2.BuildsDir, c.BuildsDir)
	}

	// Without CI_CONCURRENT_PROJECT_ID, CI_CONCURRENT_ID is used.
	delete(j.vars, "CI_CONCURRENT_PROJECT_ID")
	j.vars["CI_CONCURRENT_ID"] = "7"
	var c3 stages.ConfigOutput
	json.Unmarshal([]byte(j.ferry("config").stdout), &c3)
	if c3.BuildsDir != filepath.Join(j.builds, "tok12345", "7") {
		t.Errorf("builds_dir from CI_CONCURRENT_ID: %q", c3.BuildsDir)
	}

	// A hostile id never becomes a path.
	j.vars["CI_CONCURRENT_ID"] = "../../etc"
	r = j.ferry("config")
	if r.code == 0 || !strings.Contains(r.stderr, "CUSTOM_ENV_CI_CONCURRENT_ID") {
		t.Errorf("bad concurrent id: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestConfigRefusesStateInsideBuilds(t *testing.T) {
	j := newJob(t, "102")
	j.args = append(j.args, "--state-dir="+filepath.Join(j.builds, "state"))
	r := j.ferry("config")
	if r.code != 2 || !strings.Contains(r.stderr, "--state-dir") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestPrepareCreatesPrivateStateDir(t *testing.T) {
	j := newJob(t, "103")
	r := j.ferry("prepare")
	if r.code != 0 {
		t.Fatalf("prepare: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	st := j.state()
	fi, err := os.Stat(st.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", fi.Mode().Perm())
	}
	if fi, err := os.Stat(st.BinDir()); err != nil || !fi.IsDir() {
		t.Errorf("bin dir: %v", err)
	}
	if fi, err := os.Stat(st.Path(jobstate.MetaFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("meta.json: %v %v", err, fi)
	}
	m, err := st.Meta()
	if err != nil || m.TimeoutSeconds != 3600 || m.JobID != "103" || m.ProjectDir != j.project {
		t.Errorf("meta %+v, %v", m, err)
	}
	if !strings.HasPrefix(st.Dir(), j.stateDir+"/jobs/") || strings.HasPrefix(st.Dir(), j.builds) {
		t.Errorf("state dir %s", st.Dir())
	}
	if !strings.Contains(r.stdout, "section_start:") || !strings.Contains(r.stdout, "job state ready in") ||
		!strings.Contains(r.stdout, "section_end:") {
		t.Errorf("banner missing:\n%q", r.stdout)
	}
}

func TestPrepareUnwritableStateDir(t *testing.T) {
	j := newJob(t, "104")
	// A regular file where a directory must be: fails for root too.
	blocker := filepath.Join(j.base, "not-a-dir")
	os.WriteFile(blocker, []byte("x"), 0o600)
	bad := filepath.Join(blocker, "state")
	j.args = append(j.args, "--state-dir="+bad)
	r := j.ferry("prepare")
	if r.code != 2 {
		t.Errorf("exit %d, want SYSTEM_FAILURE_EXIT_CODE 2", r.code)
	}
	if !strings.Contains(r.stderr, "cannot create state dir "+bad) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("want one line naming %s, got %q", bad, r.stderr)
	}
	if os.Geteuid() != 0 {
		// And a directory without write permission.
		ro := filepath.Join(j.base, "ro")
		os.Mkdir(ro, 0o500)
		j.args = append(j.args, "--state-dir="+ro)
		r = j.ferry("prepare")
		if r.code != 2 || !strings.Contains(r.stderr, ro) {
			t.Errorf("read-only root: exit %d %q", r.code, r.stderr)
		}
	}
}

func TestRunPassingAndFailing(t *testing.T) {
	j := newJob(t, "105")
	j.mustPrepare()
	r := j.ferry("run", j.script("echo hello from the job"), "build_script")
	if r.code != 0 || !strings.Contains(r.stdout, "hello from the job") {
		t.Errorf("passing: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(j.base, "exit_code")); err == nil {
		t.Errorf("exit code file written for a passing script")
	}

	r = j.ferry("run", j.script("echo failing >&2; exit 3"), "step_script")
	if r.code != 1 {
		t.Errorf("failing: exit %d, want BUILD_FAILURE_EXIT_CODE 1", r.code)
	}
	if !strings.Contains(r.stderr, "failing") {
		t.Errorf("stderr %q", r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(j.base, "exit_code"))
	if err != nil || strings.TrimSpace(string(b)) != "3" {
		t.Errorf("exit code file %q %v, want 3", b, err)
	}

	// after_script still runs after a failed step, as the runner calls it.
	r = j.ferry("run", j.script("echo after"), "after_script")
	if r.code != 0 || !strings.Contains(r.stdout, "after") {
		t.Errorf("after_script: exit %d %q", r.code, r.stdout)
	}
}

func TestRunUnknownStageName(t *testing.T) {
	j := newJob(t, "106")
	j.mustPrepare()
	for _, stage := range []string{"step_release", "no_such_stage_yet", "archive_cache_on_failure"} {
		r := j.ferry("run", j.script("echo stage ran"), stage)
		if r.code != 0 || !strings.Contains(r.stdout, "stage ran") {
			t.Errorf("%s: exit %d %q %q", stage, r.code, r.stdout, r.stderr)
		}
	}
}

func TestRunOutsideRunner(t *testing.T) {
	c := newJob(t, "107").cmd("run", "/dev/null", "build_script")
	c.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	r := run(t, c)
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	for _, v := range []string{"BUILD_FAILURE_EXIT_CODE", "SYSTEM_FAILURE_EXIT_CODE", "JOB_RESPONSE_FILE"} {
		if !strings.Contains(r.stderr, v) {
			t.Errorf("error does not name %s: %q", v, r.stderr)
		}
	}
	if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("want one line: %q", r.stderr)
	}
}

func TestRunWithoutPrepare(t *testing.T) {
	j := newJob(t, "108")
	r := j.ferry("run", j.script("echo x"), "build_script")
	if r.code != 2 || !strings.Contains(r.stderr, "prepare_exec") {
		t.Errorf("exit %d %q", r.code, r.stderr)
	}
}

func TestRunChildEnvironment(t *testing.T) {
	j := newJob(t, "109")
	j.extra = []string{"LC_ALL=C", "SOME_HOST_SECRET=hostvalue", "PASSED_ONE=yes", "TERM=dumb"}
	j.args = append(j.args, "--pass-env=PASSED_ONE,BUILD_FAILURE_EXIT_CODE")
	j.mustPrepare()
	r := j.ferry("run", j.script("env"), "build_script")
	if r.code != 0 {
		t.Fatalf("exit %d %s", r.code, r.stderr)
	}
	env := map[string]string{}
	for _, l := range strings.Split(r.stdout, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	for k := range env {
		if strings.HasPrefix(k, "CUSTOM_ENV_") || strings.HasPrefix(k, "BUILD_") || k == "JOB_RESPONSE_FILE" || k == "SYSTEM_FAILURE_EXIT_CODE" || k == "SOME_HOST_SECRET" {
			t.Errorf("%s reached the job", k)
		}
	}
	st := j.state()
	if !strings.HasPrefix(env["PATH"], st.BinDir()+":") {
		t.Errorf("PATH %q does not start with %s", env["PATH"], st.BinDir())
	}
	if env["FERRY_STATE_DIR"] != j.stateDir || env["PASSED_ONE"] != "yes" || env["LC_ALL"] != "C" || env["TERM"] != "dumb" {
		t.Errorf("env %v", env)
	}
	// HOME is the job's own (docs/home.md: this payload has no project
	// id, so a per-job home), not the runner's; the XDG dirs follow it.
	if home := st.Path("home"); env["HOME"] != home || env["XDG_CONFIG_HOME"] != home+"/.config" || env["XDG_CACHE_HOME"] != home+"/.cache" {
		t.Errorf("env %v", env)
	}
}

// gitlabEnvScript behaves like the runner's stage script: it exports the job
// variable itself, then sources GITLAB_ENV with allexport.
func gitlabEnvScript(project string) string {
	return `export MYVAR='from-the-job'
GITLAB_ENV='` + project + `.tmp/gitlab_runner_env'
if [ -f "$GITLAB_ENV" ]; then set -o allexport; . "$GITLAB_ENV"; set +o allexport; fi
echo "MYVAR=$MYVAR"
echo "OTHER=$OTHER"
echo "SECRETVAR=$SECRETVAR"`
}

func TestRunOverridesBeatJobVariables(t *testing.T) {
	j := newJob(t, "110")
	j.vars["MYVAR"] = "from-the-job"
	j.vars["SECRETVAR"] = "job-secret-var"
	j.mustPrepare()
	st := j.state()
	if err := st.AddEnv("MYVAR", "/from/ferry:x", false); err != nil {
		t.Fatal(err)
	}
	st.AddEnv("OTHER", "not-a-job-var", false)
	st.AddEnv("SECRETVAR", "ferry-secret-value-1", true)
	script := j.script(gitlabEnvScript(j.project))
	for i := 0; i < 3; i++ {
		r := j.ferry("run", script, "build_script")
		if r.code != 0 {
			t.Fatalf("exit %d %s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "MYVAR=/from/ferry:x\n") || !strings.Contains(r.stdout, "OTHER=not-a-job-var\n") {
			t.Errorf("run %d: %q", i, r.stdout)
		}
	}
	genv := filepath.Join(j.project+".tmp", "gitlab_runner_env")
	b, err := os.ReadFile(genv)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(b), "MYVAR=") != 1 {
		t.Errorf("GITLAB_ENV has duplicated lines:\n%s", b)
	}
	if strings.Contains(string(b), "ferry-secret-value-1") || strings.Contains(string(b), "OTHER") {
		t.Errorf("GITLAB_ENV holds a secret or a non-job variable:\n%s", b)
	}
	// The user's own lines survive ferry's stages and its cleanup.
	f, _ := os.OpenFile(genv, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("USERLINE=kept\n")
	f.Close()
	j.ferry("run", script, "after_script")
	if r := j.ferry("cleanup"); r.code != 0 {
		t.Fatalf("cleanup %d %s", r.code, r.stderr)
	}
	b, _ = os.ReadFile(genv)
	if string(b) != "USERLINE=kept\n" {
		t.Errorf("GITLAB_ENV after cleanup: %q", b)
	}
}

func TestRunRedactsSecrets(t *testing.T) {
	j := newJob(t, "111")
	j.mustPrepare()
	secret := "s3cr3t-Token-Value-42"
	if err := j.state().AddSecrets(secret); err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))
	r := j.ferry("run", j.script("echo out "+secret+"; echo err "+secret+" >&2; echo enc "+b64+"; printf %s "+secret[:5]+"; printf '%s\\n' "+secret[5:]), "build_script")
	all := r.stdout + r.stderr
	if r.code != 0 || strings.Contains(all, secret) || strings.Contains(all, b64) {
		t.Errorf("secret leaked (exit %d):\n%s", r.code, all)
	}
	if strings.Count(all, "[MASKED]") < 4 {
		t.Errorf("want 4 masks:\n%s", all)
	}
}

// A masked variable of megabytes is masked whole in every stage (the job
// prints it from a file: it is too long for an environment variable), and
// only the value is kept: its docker login form is not derived, which
// prepare says in one line.
func TestLongMaskedValueMaskedWhole(t *testing.T) {
	j := newJob(t, "")
	raw := make([]byte, 768<<10)
	rand.New(rand.NewSource(7)).Read(raw)
	value := base64.StdEncoding.EncodeToString(raw) // 1 MiB
	j.writePayload(3600, []jobenv.Variable{{Key: "HUGE_TOKEN", Value: value, Masked: true}})
	r := j.ferry("prepare")
	if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "masked variable(s) HUGE_TOKEN longer than 64 KiB: masked as they are") {
		t.Fatalf("prepare (exit %d) does not name the long value:\n%s%s", r.code, r.stdout, r.stderr)
	}
	fi, err := os.Stat(j.state().Path(jobstate.SecretsFile))
	if err != nil || fi.Size() > int64(len(value))+64<<10 {
		t.Errorf("secrets.json: %v, %d bytes for a %d-byte value: more than the value", err, fi.Size(), len(value))
	}
	file := filepath.Join(j.project, "v.txt")
	if err := os.MkdirAll(j.project, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	r = j.ferry("run", j.script("echo start; cat "+file+"; echo; echo end; cat "+file+" >&2"), "build_script")
	all := r.stdout + r.stderr
	if r.code != 0 || strings.Contains(all, value[:64]) || strings.Contains(all, value[len(value)-64:]) || strings.Count(all, "[MASKED]") != 2 {
		t.Errorf("exit %d, %d bytes of output, %d masks; want the value masked whole twice:\n%.300s", r.code, len(all), strings.Count(all, "[MASKED]"), all)
	}
}

// TestRunCancel sends SIGTERM to ferry while the script has a background
// child and a setsid'd one: nothing may survive, and cleanup still works.
func TestRunCancel(t *testing.T) {
	j := newJob(t, "112")
	j.args = append(j.args, "--grace-period=500ms")
	j.mustPrepare()
	a, b, c := uniqueSleep(), uniqueSleep()+"1", uniqueSleep()+"2"
	ready := filepath.Join(j.project, "ready") // writable inside the sandbox
	script := j.script(`sleep ` + a + ` &
setsid sleep ` + b + ` &
( trap '' TERM; exec sleep ` + c + ` ) &
touch ` + ready + `
wait`)
	cmd := j.cmd("run", script, "build_script")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(ready); return err == nil }) {
		t.Fatal("script never got ready")
	}
	if !waitFor(5*time.Second, func() bool { return len(procsWithArg(b)) == 1 && len(procsWithArg(c)) == 1 }) {
		t.Fatal("background processes did not start")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("ferry did not exit after SIGTERM")
	}
	// The TERM-ignoring sleep gets the grace period, then SIGKILL.
	if d := time.Since(start); d > 10*time.Second || d < 450*time.Millisecond {
		t.Errorf("took %v, want about the 500ms grace period", d)
	}
	if cmd.ProcessState.ExitCode() == 0 {
		t.Errorf("cancelled run exited 0")
	}
	for _, arg := range []string{a, b, c} {
		if p := procsWithArg(arg); len(p) > 0 {
			t.Errorf("sleep %s survived: pids %v", arg, p)
			for _, pid := range p {
				if n, err := atoi(pid); err == nil {
					syscall.Kill(n, syscall.SIGKILL)
				}
			}
		}
	}
	if r := j.ferry("cleanup"); r.code != 0 {
		t.Errorf("cleanup after cancel: %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(j.state().Dir()); !os.IsNotExist(err) {
		t.Errorf("state dir still there: %v", err)
	}
}

// TestRunBackgroundDoesNotOutliveStage: a stage that leaves `sleep 1000 &`
// behind ends at once and leaves nothing running.
func TestRunBackgroundDoesNotOutliveStage(t *testing.T) {
	j := newJob(t, "113")
	j.mustPrepare()
	a, b := uniqueSleep(), uniqueSleep()+"3"
	start := time.Now()
	r := j.ferry("run", j.script("sleep "+a+" &\nsetsid sleep "+b+" &\necho started"), "build_script")
	if r.code != 0 || !strings.Contains(r.stdout, "started") {
		t.Errorf("exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stage kept alive by a background process: %v", d)
	}
	for _, arg := range []string{a, b} {
		if p := procsWithArg(arg); len(p) > 0 {
			t.Errorf("sleep %s survived the stage: %v", arg, p)
		}
	}
}

func TestCleanupIdempotent(t *testing.T) {
	j := newJob(t, "114")
	// Never prepared: nothing to do, no error.
	if r := j.ferry("cleanup"); r.code != 0 {
		t.Errorf("cleanup without prepare: %d %s", r.code, r.stderr)
	}
	j.mustPrepare()
	extra := filepath.Join(j.base, "decoded-kubeconfig")
	os.WriteFile(extra, []byte("secret"), 0o600)
	if err := j.state().AddCleanupPath(extra); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if r := j.ferry("cleanup"); r.code != 0 {
			t.Errorf("cleanup %d: %d %s", i, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(extra); !os.IsNotExist(err) {
		t.Errorf("cleanup path not removed: %v", err)
	}
	if _, err := os.Stat(j.state().Dir()); !os.IsNotExist(err) {
		t.Errorf("state dir not removed: %v", err)
	}
}

func TestPrepareSweepsStale(t *testing.T) {
	j := newJob(t, "115")
	old := filepath.Join(j.stateDir, "jobs", "00000000-1")
	long := filepath.Join(j.stateDir, "jobs", "00000000-2")
	for _, d := range []string{old, long} {
		os.MkdirAll(d, 0o700)
	}
	writeMeta(t, old, time.Now().Add(-48*time.Hour), 3600)
	writeMeta(t, long, time.Now().Add(-48*time.Hour), 3*24*3600) // a 3-day job is still running
	j.args = append(j.args, "--stale-after=24h")
	r := j.ferry("prepare")
	if r.code != 0 || !strings.Contains(r.stdout, "Removed 1 stale") {
		t.Errorf("prepare: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale dir kept")
	}
	if _, err := os.Stat(long); err != nil {
		t.Errorf("dir of a long job removed: %v", err)
	}
	if _, err := os.Stat(j.state().Dir()); err != nil {
		t.Errorf("own dir: %v", err)
	}
}

func writeMeta(t *testing.T, dir string, created time.Time, timeout int64) {
	t.Helper()
	b, _ := json.Marshal(jobstate.Meta{Created: created, JobID: "x", TimeoutSeconds: timeout})
	if err := os.WriteFile(filepath.Join(dir, jobstate.MetaFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentJobs runs ten jobs of one host at once: distinct state
// dirs, no shared files, each job sees only its own values.
func TestConcurrentJobs(t *testing.T) {
	shared := newJob(t, "0")
	var wg sync.WaitGroup
	dirs := make([]string, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			j := newJob(t, "")
			j.stateDir = shared.stateDir
			j.args[0] = "--state-dir=" + shared.stateDir
			id := 2000 + i
			j.setID(id)
			j.vars["CI_CONCURRENT_PROJECT_ID"] = itoa(i)
			if r := j.ferry("prepare"); r.code != 0 {
				t.Errorf("job %d prepare: %d %s", id, r.code, r.stderr)
				return
			}
			st := j.state()
			dirs[i] = st.Dir()
			st.AddEnv("JOB_MARK", "mark-"+itoa(id), false)
			// The sandbox hides the other jobs' state dirs (with a private
			// /tmp, a state dir under /tmp shows the job only its own).
			r := j.ferry("run", j.script("echo \"mark=$JOB_MARK\"; ls \"$FERRY_STATE_DIR/jobs\" 2>/dev/null | grep -vx \"$FERRY_JOB_KEY\"; true"), "build_script")
			if r.code != 0 || strings.TrimSpace(r.stdout) != "mark=mark-"+itoa(id) {
				t.Errorf("job %d run: %d %q %q", id, r.code, r.stdout, r.stderr)
			}
			if r := j.ferry("cleanup"); r.code != 0 {
				t.Errorf("job %d cleanup: %d %s", id, r.code, r.stderr)
			}
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, d := range dirs {
		if d == "" || seen[d] {
			t.Errorf("state dirs not distinct: %v", dirs)
		}
		seen[d] = true
	}
	left, _ := os.ReadDir(filepath.Join(shared.stateDir, "jobs"))
	if len(left) != 0 {
		t.Errorf("%d job dirs left after cleanup", len(left))
	}
}

func TestVersionAndHelp(t *testing.T) {
	j := newJob(t, "116")
	if r := j.ferry("version"); r.code != 0 || !strings.HasPrefix(r.stdout, "ferry ") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
	r := j.ferry("help")
	for _, f := range []string{"--state-dir", "--builds-dir", "--cache-dir", "--stale-after", "--grace-period", "--pass-env", "FERRY_GRACE_PERIOD"} {
		if !strings.Contains(r.stdout, f) {
			t.Errorf("help lacks %s", f)
		}
	}
}

func TestFlagEnvFallback(t *testing.T) {
	j := newJob(t, "117")
	j.args = nil
	other := filepath.Join(j.base, "elsewhere")
	j.extra = []string{"FERRY_BUILDS_DIR=" + other}
	var c stages.ConfigOutput
	json.Unmarshal([]byte(j.ferry("config").stdout), &c)
	if !strings.HasPrefix(c.BuildsDir, other+"/") {
		t.Errorf("FERRY_BUILDS_DIR ignored: %q", c.BuildsDir)
	}
	j.args = []string{"--builds-dir=" + j.builds}
	json.Unmarshal([]byte(j.ferry("config").stdout), &c)
	if !strings.HasPrefix(c.BuildsDir, j.builds+"/") {
		t.Errorf("flag does not win: %q", c.BuildsDir)
	}
	j.extra = []string{"FERRY_GRACE_PERIOD=soon"}
	r := j.ferry("config")
	if r.code == 0 || !strings.Contains(r.stderr, "FERRY_GRACE_PERIOD") {
		t.Errorf("bad env value: %d %q", r.code, r.stderr)
	}
}

// TestCleanupKillsLeftoversOfKilledRun: when the runner SIGKILLs ferry
// itself (graceful_kill_timeout shorter than --grace-period), cleanup finds
// the job's surviving processes by their FERRY_JOB_KEY mark and kills them.
func TestCleanupKillsLeftoversOfKilledRun(t *testing.T) {
	j := newJob(t, "118")
	j.mustPrepare()
	a := uniqueSleep() + "4"
	ready := filepath.Join(j.project, "ready") // writable inside the sandbox
	cmd := j.cmd("run", j.script("setsid sleep "+a+" &\ntouch "+ready+"\nwait"), "build_script")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(ready); return err == nil && len(procsWithArg(a)) == 1 }) {
		t.Fatal("script never got ready")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if len(procsWithArg(a)) != 1 {
		t.Fatal("the setsid child should still run after ferry was SIGKILLed")
	}
	if r := j.ferry("cleanup"); r.code != 0 || !strings.Contains(r.stderr, "leftover") {
		t.Errorf("cleanup: %d %q", r.code, r.stderr)
	}
	if !waitFor(3*time.Second, func() bool { return len(procsWithArg(a)) == 0 }) {
		t.Errorf("sleep %s survived cleanup", a)
	}
}
