package runnerdriver

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/runnerdriver/internal/gitlabdotenv"
)

// TestShellEscapeRoundTrip feeds every byte through real bash.
func TestShellEscapeRoundTrip(t *testing.T) {
	var all []byte
	for c := 1; c < 256; c++ {
		all = append(all, byte(c))
	}
	for _, s := range []string{"", "plain", "a b", "it's", `back\slash`, "$HOME `id` $(id)", "tab\there\nnl", "héllo ✓", string(all)} {
		out, err := exec.Command("bash", "-c", "printf '%s' "+shellEscape(s)).Output()
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if string(out) != s {
			t.Errorf("escape(%q) = %s gives %q", s, shellEscape(s), out)
		}
	}
	if got := shellEscape("docker.env"); got != "docker.env" {
		t.Errorf("plain word quoted: %s", got)
	}
}

// TestStageScriptInBash runs a generated stage script with plain bash: the
// exports, File variables and GITLAB_ENV handling work as the runner's do.
func TestStageScriptInBash(t *testing.T) {
	dir := t.TempDir()
	proj := filepath.Join(dir, "group", "project")
	if err := os.MkdirAll(proj, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []GitlabEnvMode{GitlabEnvAllexport, GitlabEnvExportLines} {
		w := &scriptWriter{tmpDir: proj + ".tmp", envMod: mode}
		w.exports([]Variable{
			{Key: "CI_PROJECT_DIR", Value: proj},
			{Key: "QUOTED", Value: `it's "$odd"`},
			{Key: "PEM", Value: "line1\nline2\n", File: true},
		})
		w.command("cd", proj)
		w.commands([]string{`echo "q=$QUOTED"`, `cat "$PEM"`, `echo "X=1" >> "$GITLAB_ENV"`, "false", "echo unreachable"}, false, "s")
		script := filepath.Join(dir, "script.sh")
		if err := os.WriteFile(script, []byte(w.finish()), 0o700); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("bash", script).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("mode %d: want exit 1 from `false`, got %v\n%s", mode, err, out)
		}
		got := StripANSI(string(out))
		for _, want := range []string{"$ echo \"q=$QUOTED\"\nq=it's \"$odd\"\n", "line1\nline2\n", "$ false\n"} {
			if !strings.Contains(got, want) {
				t.Errorf("mode %d: output lacks %q:\n%s", mode, want, got)
			}
		}
		if strings.Contains(got, "unreachable") {
			t.Errorf("mode %d: errexit did not stop the script", mode)
		}
		if b, _ := os.ReadFile(filepath.Join(proj+".tmp", "gitlab_runner_env")); string(b) != "X=1\n" {
			t.Errorf("mode %d: GITLAB_ENV content %q", mode, b)
		}
		_ = os.Remove(filepath.Join(proj+".tmp", "gitlab_runner_env"))
	}
}

// writeExecutor writes a custom executor used to test the driver's own
// protocol handling (retries, bad JSON) where ferry would have to misbehave
// on purpose. It is a real program run as a real process.
func writeExecutor(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "executor")
	if err := os.WriteFile(p, []byte("#!/bin/bash\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrepareRetriedWithCleanupAfterEachAttempt(t *testing.T) {
	counter := filepath.Join(t.TempDir(), "n")
	// config prints invalid JSON twice, then works; run executes the script.
	exe := writeExecutor(t, `
case $1 in
config) n=$(cat `+counter+` 2>/dev/null || echo 0); n=$((n+1)); echo $n > `+counter+`
        if [ $n -lt 3 ]; then echo 'not json'; else echo '{"builds_dir":"'$HOME'/b","driver":{"name":"t","version":"1"}}'; fi;;
prepare) echo "prepare attempt";;
run) bash "${@: -2:1}" || { echo $? > "$BUILD_EXIT_CODE_FILE"; exit 1; };;
cleanup) echo "cleanup-ran";;
esac`)
	base := t.TempDir()
	d, err := New(Config{FerryBinary: exe, BaseDir: base, PrepareRetryDelay: 10 * time.Millisecond, Env: hostEnv(base)})
	if err != nil {
		t.Fatal(err)
	}
	r := d.RunJob(ctxT(t), Job{Name: "retry", Script: []string{"echo ok"}})
	requireStatus(t, r, StatusSuccess)
	want := []string{"config", "cleanup", "config", "cleanup", "config", "prepare"}
	if got := kinds(r.Calls)[:6]; !reflect.DeepEqual(got, want) {
		t.Errorf("calls %v, want %v then stages", got, want)
	}
	if n := strings.Count(r.Log, "ERROR: Preparation failed: error while parsing JSON output"); n != 2 {
		t.Errorf("%d preparation failures in the log, want 2:\n%s", n, StripANSI(r.Log))
	}
	if strings.Contains(r.Log, "cleanup-ran") || strings.Count(r.SystemLog, "cleanup-ran") != 3 {
		t.Errorf("cleanup output must go to the system log only (3 times):\nlog:\n%s\nsystem:\n%s", r.Log, r.SystemLog)
	}
}

func TestPrepareBuildFailureNotRetried(t *testing.T) {
	exe := writeExecutor(t, `
case $1 in
config) echo '{}';;
prepare) echo "bad variable" >&2; exit 1;;
cleanup) :;;
*) exit 2;;
esac`)
	base := t.TempDir()
	d, err := New(Config{FerryBinary: exe, BaseDir: base, PrepareRetryDelay: time.Millisecond, Env: hostEnv(base)})
	if err != nil {
		t.Fatal(err)
	}
	r := d.RunJob(ctxT(t), Job{Name: "x", Script: []string{"echo"}})
	requireStatus(t, r, StatusFailed)
	if r.FailureReason != ReasonScriptFailure || len(r.Stages) != 0 {
		t.Errorf("reason %q stages %v", r.FailureReason, r.Stages)
	}
	if got := kinds(r.Calls); !reflect.DeepEqual(got, []string{"config", "prepare", "cleanup"}) {
		t.Errorf("calls %v", got)
	}
	if !strings.Contains(r.Log, "bad variable") {
		t.Error("prepare's stderr is not in the job log")
	}
}

func TestGitLabDotenvParse(t *testing.T) {
	ok := []struct {
		in   string
		want []gitlabdotenv.Var
	}{
		{"A=1\n", []gitlabdotenv.Var{{Key: "A", Value: "1"}}},
		{"\ufeffA = x y \nB=\"q\"\nA=2", []gitlabdotenv.Var{{Key: "A", Value: "2"}, {Key: "B", Value: `"q"`}}},
		{"URL=a=b", []gitlabdotenv.Var{{Key: "URL", Value: "a=b"}}},
		{"", nil},
	}
	for _, tc := range ok {
		got, err := gitlabdotenv.Parse([]byte(tc.in), 20)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"# c\nA=1", "A=1\n\nB=2", "export A=1", "A-B=1", "novalue", strings.Repeat("A=1\n", 2000)} {
		if _, err := gitlabdotenv.Parse([]byte(bad), 20); err == nil {
			t.Errorf("Parse(%.20q) accepted", bad)
		}
	}
	var many strings.Builder
	for i := range 21 {
		many.WriteString("K" + string(rune('a'+i)) + "=v\n")
	}
	if _, err := gitlabdotenv.Parse([]byte(many.String()), 20); err == nil {
		t.Error("21 variables accepted with a limit of 20")
	}
}

func TestRender(t *testing.T) {
	log := "Running with gitlab-runner\n" +
		"\033[0Ksection_start:100:prepare_script\r\033[0K\033[0K\033[36;1mPreparing environment\033[0;m\033[0;m\n" +
		"Running on host...\n" +
		"section_start:101:section_script_step_0[hide_duration=true,collapsed=true]\r\033[0K\033[32;1m$ echo hi\033[0;m\n" +
		"hi\n" +
		"section_end:101:section_script_step_0\r\033[0K\n" +
		"\033[0Ksection_end:103:prepare_script\r\033[0K\033[32;1mJob succeeded\033[0;m\n"
	got := Render(log)
	for _, want := range []string{"▶ \033[36;1mPreparing environment", "Running on host...", "$ echo hi", "└ prepare_script: 3s", "\033[32;1mJob succeeded"} {
		if !strings.Contains(got, want) {
			t.Errorf("render lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "section_") || strings.Contains(got, "\r") || strings.Contains(got, "└ section_script_step_0") {
		t.Errorf("markers left or hidden duration shown:\n%q", got)
	}
}

// jsonShape lists the key paths of a JSON document (arrays by their first element).
func jsonShape(prefix string, v any, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			out[prefix+"."+k] = true
			jsonShape(prefix+"."+k, e, out)
		}
	case []any:
		if len(x) > 0 {
			jsonShape(prefix+"[]", x[0], out)
		}
	}
}

// TestPayloadShape: JOB_RESPONSE_FILE has every field of the payload a real
// runner got (testdata/payloads/job_response.example.json) that ferry may read.
func TestPayloadShape(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "testdata", "payloads", "job_response.example.json"))
	if err != nil {
		t.Fatal(err)
	}
	var example any
	if err := json.Unmarshal(b, &example); err != nil {
		t.Fatal(err)
	}
	jr := &jobRun{d: &Driver{cfg: Config{ServerURL: "https://gitlab.example.com", RunnerShortToken: "ferrydrv"}},
		job: Job{Name: "kube", Stage: "deploy", Script: []string{"echo"}, AfterScript: []string{"echo"},
			Artifacts: []Artifact{DotenvReport("docker.env")}},
		jc: &jobCtx{pipelineID: 7, projectID: 42, projectPath: "group/shark-app", ref: "master",
			sha: strings.Repeat("a", 40), repoURL: "file:///x", deps: []dependency{{ID: 701, Token: "t", Name: "kaniko"}}},
		id: 702, token: jobToken(702)}
	got, err := jr.payloadJSON()
	if err != nil {
		t.Fatal(err)
	}
	var mine any
	if err := json.Unmarshal(got, &mine); err != nil {
		t.Fatal(err)
	}
	want, have := map[string]bool{}, map[string]bool{}
	jsonShape("", example, want)
	jsonShape("", mine, have)
	var missing []string
	for k := range want {
		// Fields no job of ours uses and the runner does not pass on.
		if strings.HasPrefix(k, ".image.executor_opts") || strings.HasPrefix(k, ".job_info.time_in_queue") ||
			strings.HasPrefix(k, ".job_info.project_jobs_running") || k == ".git_info.repo_object_format" {
			continue
		}
		if !have[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("payload lacks %v", missing)
	}
}

func TestArtifactSources(t *testing.T) {
	jobs := []Job{
		{Name: "a", Stage: "build"}, {Name: "b", Stage: "build"},
		{Name: "c", Stage: "test"},
		{Name: "d", Stage: "deploy", Needs: []Need{{Job: "a"}, {Job: "b", SkipArtifacts: true}}},
		{Name: "e", Stage: "deploy", Dependencies: []string{"c"}},
		{Name: "f", Stage: "deploy", Dependencies: []string{}},
		{Name: "g", Stage: "deploy"},
	}
	idx := stageOrder(Pipeline{Jobs: jobs})
	for name, want := range map[string][]string{
		"c": {"a", "b"}, "d": {"a"}, "e": {"c"}, "f": nil, "g": {"a", "b", "c"},
	} {
		var j Job
		for _, x := range jobs {
			if x.Name == name {
				j = x
			}
		}
		if got := artifactSources(j, jobs, idx); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: dependencies %v, want %v", name, got, want)
		}
	}
}

func TestGitLabDotenvRejectsInvalidReport(t *testing.T) {
	// This tests the driver's stand-in for GitLab, so ferry's own dotenv
	// check (which fails the job earlier, with a line number) is turned off.
	d := newDriver(t, func(c *Config) {
		c.GitLabDotenv = true
		c.ExtraArgs = append(c.ExtraArgs, "--dotenv-store=off")
	})
	pr := d.RunPipeline(ctxT(t), Pipeline{Jobs: []Job{
		{Name: "bad", Stage: "build", Script: []string{`printf '# comment\nIMAGE=x\n' > build.env`},
			Artifacts: []Artifact{DotenvReport("build.env")}},
		{Name: "next", Stage: "deploy", Script: []string{"echo next"}},
	}})
	bad := pr.Jobs["bad"]
	requireStatus(t, bad, StatusFailed)
	if !strings.Contains(bad.Log, "400 Bad Request (Invalid Format)") {
		t.Errorf("no GitLab rejection in the log:\n%s", StripANSI(bad.Log))
	}
	requireStatus(t, pr.Jobs["next"], StatusSkipped)
}
