package stages_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/dotenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
)

// Bad input and the guards against hostile jobs, through the real ferry
// binary (docs/bad-input.md). Each test fails when its guard is removed.

// dotenvJob is a fake job whose payload has a real job id and token,
// artifacts and dependencies; several share one state dir (the host).
type dotenvJob struct {
	*fakeJob
	token string
}

type payloadDep struct {
	ID    int64  `json:"id"`
	Token string `json:"token"`
	Name  string `json:"name"`
}

func newDotenvJob(t *testing.T, host *fakeJob, id int64, token string, vars []jobenv.Variable, deps []payloadDep, report string) *dotenvJob {
	t.Helper()
	j := newJob(t, itoa(int(id)))
	if host != nil {
		// Same runner host: one state dir and builds dir.
		j.stateDir, j.builds, j.project = host.stateDir, host.builds, host.project
		j.vars["CI_PROJECT_DIR"] = j.project
		j.args = append([]string(nil), host.args...)
	}
	var arts []map[string]any
	if report != "" {
		arts = append(arts, map[string]any{"name": ".env", "paths": []string{report}, "when": "on_success",
			"artifact_type": "dotenv", "artifact_format": "gzip"})
	}
	for _, v := range vars {
		j.vars[v.Key] = v.Value
	}
	p := map[string]any{"id": id, "token": token, "job_info": map[string]any{"name": "job-" + itoa(int(id)), "project_id": 42},
		"runner_info": map[string]any{"timeout": 3600}, "variables": vars, "artifacts": arts, "dependencies": deps}
	b, _ := json.Marshal(p)
	if err := os.WriteFile(j.payload, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(j.project, 0o755); err != nil {
		t.Fatal(err)
	}
	return &dotenvJob{fakeJob: j, token: token}
}

// upload runs the producer's upload stage (where ferry captures reports).
func (j *dotenvJob) upload() result {
	j.t.Helper()
	return j.ferry("run", j.script("true"), "upload_artifacts_on_success")
}

func (j *dotenvJob) exitCodeFile() string { return filepath.Join(j.base, "exit_code") }

// storedReports lists the report files of the dir store.
func storedReports(stateDir string) []string {
	files, _ := filepath.Glob(filepath.Join(stateDir, "dotenv", "*", "*.json"))
	return files
}

// TestDotenvEnvLimitRefusedAtCapture: a value over Linux's limit for one
// environment string is the producer's build failure, naming file:line, the
// key and the limit; nothing is stored; BUILD_EXIT_CODE_FILE says 1 even
// though an earlier stage left 42 there (runners 17.9+ keep one per job).
func TestDotenvEnvLimitRefusedAtCapture(t *testing.T) {
	p := newDotenvJob(t, nil, 9101, "tok-9101", nil, nil, "docker.env")
	p.mustPrepare()
	big := strings.Repeat("x", dotenv.MaxEnvString)
	if err := os.WriteFile(filepath.Join(p.project, "docker.env"), []byte("IMAGE=ok\nBIG="+big+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.exitCodeFile(), []byte("42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := p.upload()
	out := r.stdout + r.stderr
	if r.code != 1 {
		t.Fatalf("exit %d, want BUILD_FAILURE_EXIT_CODE 1\n%s", r.code, out)
	}
	for _, want := range []string{"docker.env:2: BIG:", "131072 bytes", "MAX_ARG_STRLEN"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%.500s", want, out)
		}
	}
	if strings.Count(strings.TrimSpace(out), "\n") != 0 || strings.Contains(out, "xxxx") {
		t.Errorf("want one line without the value, got %d bytes:\n%.500s", len(out), out)
	}
	if b, _ := os.ReadFile(p.exitCodeFile()); string(b) != "1\n" {
		t.Errorf("BUILD_EXIT_CODE_FILE holds %q, want \"1\\n\" (the stale 42 would be reported)", b)
	}
	if files := storedReports(p.stateDir); len(files) != 0 {
		t.Errorf("stored %v", files)
	}
}

// TestScriptExitCodeStillRecorded: the script's own code still goes to
// BUILD_EXIT_CODE_FILE, replacing what an earlier stage left.
func TestScriptExitCodeStillRecorded(t *testing.T) {
	j := newJob(t, "9102")
	j.mustPrepare()
	os.WriteFile(filepath.Join(j.base, "exit_code"), []byte("42\n"), 0o600)
	if r := j.ferry("run", j.script("exit 7"), "build_script"); r.code != 1 {
		t.Fatalf("exit %d", r.code)
	}
	if b, _ := os.ReadFile(filepath.Join(j.base, "exit_code")); string(b) != "7\n" {
		t.Errorf("BUILD_EXIT_CODE_FILE %q, want 7", b)
	}
}

// TestDotenvReportPathGuards: a report that is a symlink leading out of the
// project dir, or a path with "..", is refused as the producer's build
// failure, and what it points at is never stored or handed on.
func TestDotenvReportPathGuards(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		setup      func(project, outside string) error
		want       string
	}{
		{"symlink", "docker.env", func(project, outside string) error {
			return os.Symlink(outside, filepath.Join(project, "docker.env"))
		}, "docker.env: " + "OUTSIDE" + " is outside the project directory"},
		{"dotdot", "../outside.env", func(project, outside string) error {
			return os.WriteFile(filepath.Join(filepath.Dir(project), "outside.env"), []byte("STOLEN=yes\n"), 0o644)
		}, "../outside.env: " + "OUTSIDE" + " is outside the project directory"},
		{"symlinked dir", "sub/x.env", func(project, outside string) error {
			return os.Symlink(filepath.Dir(outside), filepath.Join(project, "sub"))
		}, "sub/x.env: " + "OUTSIDE" + " is outside the project directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newDotenvJob(t, nil, 9110, "tok-9110", nil, nil, tc.path)
			p.mustPrepare()
			// Another job's file, outside this project: a valid report.
			outsideDir := t.TempDir()
			outside := filepath.Join(outsideDir, "x.env")
			if err := os.WriteFile(outside, []byte("STOLEN=yes\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(p.project, outside); err != nil {
				t.Fatal(err)
			}
			r := p.upload()
			out := r.stdout + r.stderr
			real := outside
			if tc.name == "dotdot" {
				real = filepath.Join(filepath.Dir(p.project), "outside.env")
			}
			want := strings.Replace(tc.want, "OUTSIDE", real, 1)
			if r.code != 1 || !strings.Contains(out, want) {
				t.Fatalf("exit %d, want 1 with %q:\n%s", r.code, want, out)
			}
			if strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("not one line:\n%s", out)
			}
			if files := storedReports(p.stateDir); len(files) != 0 {
				t.Errorf("stored %v", files)
			}
		})
	}
}

// captured runs a producer that reports content, and returns it.
func captured(t *testing.T, id int64, token, content string, vars ...jobenv.Variable) *dotenvJob {
	t.Helper()
	p := newDotenvJob(t, nil, id, token, vars, nil, "docker.env")
	p.mustPrepare()
	if err := os.WriteFile(filepath.Join(p.project, "docker.env"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := p.upload(); r.code != 0 {
		t.Fatalf("producer upload: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return p
}

// consume prepares a consumer of the producer and runs a build stage that
// prints its environment; it returns prepare's output and the stage's.
func consume(t *testing.T, p *dotenvJob, id int64, dep payloadDep, vars []jobenv.Variable, body string) (*dotenvJob, string, string) {
	t.Helper()
	c := newDotenvJob(t, p.fakeJob, id, "tok-"+itoa(int(id)), vars, []payloadDep{dep}, "")
	r := c.ferry("prepare")
	if r.code != 0 {
		t.Fatalf("consumer prepare: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	s := c.ferry("run", c.script(body), "build_script")
	if s.code != 0 {
		t.Fatalf("consumer build_script: exit %d\n%s%s", s.code, s.stdout, s.stderr)
	}
	return c, r.stdout + r.stderr, s.stdout + s.stderr
}

// TestDotenvFerryKeysRefused: FERRY_* keys in a report never reach a
// consumer (ferry's kubectl and stages read FERRY_* settings from the job's
// environment); the log names each key and its producer.
func TestDotenvFerryKeysRefused(t *testing.T) {
	p := captured(t, 9120, "tok-9120", "IMAGE=img\nFERRY_INJECTED=evil\nFERRY_STATE_DIR=/tmp/evil\n")
	_, prep, out := consume(t, p, 9121, payloadDep{ID: 9120, Token: "tok-9120", Name: "job-9120"}, nil,
		`echo "IMAGE=[$IMAGE] INJECTED=[${FERRY_INJECTED-unset}] STATE=[$FERRY_STATE_DIR]"`)
	if !strings.Contains(out, "IMAGE=[img] INJECTED=[unset] STATE=["+p.stateDir+"]") {
		t.Errorf("consumer saw:\n%s", out)
	}
	for _, k := range []string{"FERRY_INJECTED", "FERRY_STATE_DIR"} {
		if !strings.Contains(prep, "dotenv: "+k+" from job-9120 not set: FERRY_* variables are ferry's own") {
			t.Errorf("prepare does not name %s:\n%s", k, prep)
		}
	}
	// Not in env.json either (where kubectl and later stages would read it).
	envs, _ := filepath.Glob(filepath.Join(p.stateDir, "jobs", "*", "env.json"))
	for _, f := range envs {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), "FERRY_INJECTED") {
			t.Errorf("%s holds FERRY_INJECTED", f)
		}
	}
}

// TestDotenvReportOfAnotherProducerRefused: a stored report is handed only
// to jobs whose payload names its producer with the producer's token; a
// report under the same job id from another producer (another GitLab, a
// reinstalled one, a forged store entry) is not used.
func TestDotenvReportOfAnotherProducerRefused(t *testing.T) {
	p := captured(t, 9130, "tok-9130-right", "IMAGE=from-the-real-producer\n")
	_, prep, out := consume(t, p, 9131, payloadDep{ID: 9130, Token: "tok-9130-other", Name: "job-9130"}, nil,
		`echo "IMAGE=[${IMAGE-unset}]"`)
	if !strings.Contains(out, "IMAGE=[unset]") {
		t.Errorf("a report of another producer was used:\n%s", out)
	}
	// GitLab hands each job its dependencies' names and tokens; the report
	// is sealed with the producer's token (docs/dotenv.md, "Authenticated
	// reports"), so another token refuses it in one line naming the job.
	if n := strings.Count(prep, "the stored report of job 9130 (job-9130) is refused"); n != 1 {
		t.Errorf("prepare does not say the report was not used:\n%s", prep)
	}
	// Control: with the producer's token the same report is used.
	_, _, out = consume(t, p, 9132, payloadDep{ID: 9130, Token: "tok-9130-right", Name: "job-9130"}, nil,
		`echo "IMAGE=[${IMAGE-unset}]"`)
	if !strings.Contains(out, "IMAGE=[from-the-real-producer]") {
		t.Errorf("the producer's own report was not used:\n%s", out)
	}
}

// TestGitlabEnvGuards: ferry's overrides of job variables go through
// GITLAB_ENV (the runner's stage script would hide them otherwise), except
// values that do not mean the same to every runner's reading of that file,
// and secrets (the file is in the build dir). A job-defined PATH gets the
// per-job bin dir in front, unless it cannot be written safely.
func TestGitlabEnvGuards(t *testing.T) {
	p := captured(t, 9140, "tok-9140", "SAFE=registry.example.com/app:1.2\nUNSAFE=a b $HOME\nDEPLOY_TOKEN=tok-s3cr3t-value\n",
		jobenv.Variable{Key: "FERRY_DOTENV_SECRET_KEYS", Value: "*_TOKEN", Public: true})
	pub := func(k, v string) jobenv.Variable { return jobenv.Variable{Key: k, Value: v, Public: true} }
	jobPath := "/opt/job-tools/bin:/usr/local/bin:/usr/bin:/bin"
	c, prep, out := consume(t, p, 9141, payloadDep{ID: 9140, Token: "tok-9140", Name: "job-9140"},
		[]jobenv.Variable{pub("SAFE", "job-default"), pub("UNSAFE", "job-default"), pub("DEPLOY_TOKEN", "job-default"), pub("PATH", jobPath)},
		`echo "SAFE=[$SAFE]"`)
	_ = out
	genv := filepath.Join(c.project+".tmp", "gitlab_runner_env")
	b, err := os.ReadFile(genv)
	if err != nil {
		t.Fatalf("GITLAB_ENV: %v", err)
	}
	lines := string(b)
	st := c.state()
	for _, want := range []string{"SAFE=registry.example.com/app:1.2\n", "PATH=" + st.BinDir() + ":" + jobPath + "\n"} {
		if !strings.Contains(lines, want) {
			t.Errorf("GITLAB_ENV lacks %q:\n%s", want, lines)
		}
	}
	for _, bad := range []string{"UNSAFE", "DEPLOY_TOKEN", "tok-s3cr3t-value"} {
		if strings.Contains(lines, bad) {
			t.Errorf("GITLAB_ENV holds %s:\n%s", bad, lines)
		}
	}
	all := prep + out
	for _, want := range []string{
		"ferry: UNSAFE: value has characters not safe in GITLAB_ENV: the job's own value wins",
		"ferry: DEPLOY_TOKEN is a job variable and a secret: its ferry value is not written to GITLAB_ENV",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("log lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "tok-s3cr3t-value") {
		t.Error("the secret value reached the log")
	}

	// Cleanup takes ferry's lines out again (the file is in the build dir).
	if r := c.ferry("cleanup"); r.code != 0 {
		t.Fatalf("cleanup: exit %d %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(genv); strings.Contains(string(b), "PATH=") || strings.Contains(string(b), "SAFE=") {
		t.Errorf("GITLAB_ENV after cleanup:\n%s", b)
	}

	// A PATH that cannot be written safely: said, and not written.
	badPath := "/opt/my tools/bin:/usr/bin:/bin"
	c2, _, out2 := consume(t, p, 9142, payloadDep{ID: 9140, Token: "tok-9140", Name: "job-9140"},
		[]jobenv.Variable{pub("PATH", badPath)}, `true`)
	if !strings.Contains(out2, "ferry: PATH job variable has characters not safe in GITLAB_ENV: "+c2.state().BinDir()+" is not on the job's PATH") {
		t.Errorf("no warning for an unsafe PATH:\n%s", out2)
	}
	if b, _ := os.ReadFile(filepath.Join(c2.project+".tmp", "gitlab_runner_env")); strings.Contains(string(b), "PATH=") {
		t.Errorf("GITLAB_ENV holds a PATH line:\n%s", b)
	}
}

// TestStaleExitCodeAfterRetriedGetSources is issue 14's runner 17.9+ case
// end to end, under every modelled runner version: a get_sources attempt
// fails with 42 and is retried; the script passes; ferry refuses the
// invalid dotenv report at upload. The job must fail with exit code 1 and
// the refusal in its log, not with the 42 the first attempt left in the
// job's one BUILD_EXIT_CODE_FILE.
func TestStaleExitCodeAfterRetriedGetSources(t *testing.T) {
	hook := []string{`n=$(cat "$CI_PROJECT_DIR.tmp/attempts" 2>/dev/null || echo 0); echo $((n+1)) > "$CI_PROJECT_DIR.tmp/attempts"; [ "$n" -ge 1 ] || exit 42`}
	for _, ver := range runnerdriver.RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			d, state := dotenvDriver(t, nil, func(c *runnerdriver.Config) { c.RunnerVersion = ver })
			r := d.RunJob(ctxFor(t), runnerdriver.Job{Name: "producer",
				PreGetSourcesScript: hook,
				Variables:           []runnerdriver.Variable{{Key: "GET_SOURCES_ATTEMPTS", Value: "2", Public: true}},
				Script:              []string{`printf 'IMAGE=x\n\nTAG=y\n' > docker.env`},
				Artifacts:           []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")},
			})
			log := runnerdriver.StripANSI(r.Log)
			if r.Status != runnerdriver.StatusFailed || r.FailureReason != runnerdriver.ReasonScriptFailure || r.ScriptExitCode != 1 {
				t.Fatalf("%s %s exit code %d, want failed script_failure 1\n%s", r.Status, r.FailureReason, r.ScriptExitCode, log)
			}
			if n := strings.Count(strings.Join(r.Stages, " "), "get_sources"); n != 2 {
				t.Errorf("get_sources ran %d times: %v", n, r.Stages)
			}
			if !strings.Contains(log, "docker.env:2: blank line") || !strings.Contains(log, "ERROR: Job failed: exit code 1") {
				t.Errorf("log:\n%s", log)
			}
			if files := storedReports(state); len(files) != 0 {
				t.Errorf("stored %v", files)
			}
		})
	}
}

// kubeJob is a fake job with the Kubernetes credentials feature on (prepare
// runs in the engine) and the given KUBECONFIG and script lines.
func kubeJob(t *testing.T, id int64, kubeconfig string, script ...string) *fakeJob {
	t.Helper()
	j := newJob(t, itoa(int(id)))
	for i, a := range j.args {
		if a == "--kube-sources=none" {
			j.args[i] = "--kube-sources=kubeconfig,cluster-vars"
		}
	}
	j.vars["KUBECONFIG"] = kubeconfig
	p := map[string]any{"id": id, "token": "tok-" + itoa(int(id)), "runner_info": map[string]any{"timeout": 3600},
		"variables": []map[string]any{{"key": "KUBECONFIG", "value": kubeconfig, "masked": false}},
		"steps":     []map[string]any{{"name": "script", "script": script, "when": "on_success"}}}
	b, _ := json.Marshal(p)
	if err := os.WriteFile(j.payload, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return j
}

// manyContexts is a kubeconfig with n contexts and no current context.
func manyContexts(n int) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\nusers:\n- name: u\n  user:\n    token: tok-not-real\ncontexts:\n")
	for i := range n {
		b.WriteString("- name: group/agents:agent-" + itoa(1000+i) + "\n  context:\n    cluster: c\n    user: u\n")
	}
	return b.String()
}

// TestKubeconfigBadInputInPrepare: issue 14's items 1, 3 and 4 through
// ferry prepare (the engine).
func TestKubeconfigBadInputInPrepare(t *testing.T) {
	// 3: an empty KUBECONFIG is named once; prepare goes on.
	j := kubeJob(t, 9150, " \n")
	r := j.ferry("prepare")
	out := r.stdout + r.stderr
	if r.code != 0 || strings.Count(out, "KUBECONFIG") != 1 || !strings.Contains(out, "ferry: KUBECONFIG: the variable is only white space, so this job gets no Kubernetes credentials") {
		t.Errorf("empty KUBECONFIG: exit %d\n%s", r.code, out)
	}

	// 4: 1000 contexts, none selected: one short line, the build's failure.
	j = kubeJob(t, 9151, manyContexts(1000), "kubectl get pods")
	r = j.ferry("prepare")
	out = r.stdout + r.stderr
	var errLine string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "no current-context") {
			errLine = l
		}
	}
	if r.code != 1 || !strings.Contains(errLine, "one of its 1000 contexts: group/agents:agent-1000, ") || !strings.Contains(errLine, "and 995 more") {
		t.Errorf("1000 contexts: exit %d, line %q\n%.2000s", r.code, errLine, out)
	}
	if len(errLine) > 400 || strings.Contains(out, "agent-1999") {
		t.Errorf("1000 contexts: a %d-character line, or every context named", len(errLine))
	}

	// 1: a line that reads ferry's kubeconfig is not the seed's decode:
	// KUBECONFIG points at ferry's file (through GITLAB_ENV, as it is a job
	// variable) and the log does not say the script decodes it.
	kc := manyContexts(2)
	j = kubeJob(t, 9152, kc,
		"kubectl config use-context group/agents:agent-1000",
		`sed -n 's/^ *certificate-authority-data: *//p' "$KUBECONFIG" | base64 -d > ca.crt`)
	r = j.ferry("prepare")
	out = r.stdout + r.stderr
	if r.code != 0 || strings.Contains(out, "decodes KUBECONFIG itself") {
		t.Fatalf("reading line: exit %d\n%s", r.code, out)
	}
	s := j.ferry("run", j.script(`echo "KUBECONFIG=[$KUBECONFIG]"`), "build_script")
	own := j.state().Path("kube/kubeconfig")
	if !strings.Contains(s.stdout, "KUBECONFIG=["+own+"]") {
		t.Errorf("the job's KUBECONFIG is not ferry's file %s:\n%s%s", own, s.stdout, s.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(j.project+".tmp", "gitlab_runner_env")); !strings.Contains(string(b), "KUBECONFIG="+own) {
		t.Errorf("GITLAB_ENV lacks KUBECONFIG=%s:\n%s", own, b)
	}
}

// TestDotenvExpandedValueOverLimitRefusedInConsumer: a value within the
// limit in the report can pass it once the consumer expands its $VARIABLES
// (GitLab hands dotenv values over as non-raw variables): the consumer's
// prepare refuses it, naming the key and the producer, instead of every
// stage failing to start bash.
func TestDotenvExpandedValueOverLimitRefusedInConsumer(t *testing.T) {
	p := captured(t, 9160, "tok-9160", "IMAGE=img\nARGS=$BIG$BIG\n")
	big := strings.Repeat("b", 100<<10)
	c := newDotenvJob(t, p.fakeJob, 9161, "tok-9161", []jobenv.Variable{{Key: "BIG", Value: big, Public: true}},
		[]payloadDep{{ID: 9160, Token: "tok-9160", Name: "job-9160"}}, "")
	r := c.ferry("prepare")
	out := r.stdout + r.stderr
	if r.code != 1 || !strings.Contains(out, "ferry: dotenv: from job-9160, after expanding $VARIABLES: ARGS: the variable is") ||
		!strings.Contains(out, "131072 bytes (MAX_ARG_STRLEN)") {
		t.Fatalf("exit %d, want BUILD_FAILURE 1 naming ARGS and the producer:\n%.1000s", r.code, out)
	}
	if strings.Contains(out, "bbbbbbbb") {
		t.Error("the value reached the log")
	}
}
