package runnerdriver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPassingJob(t *testing.T) {
	d := newDriver(t, nil)
	r := d.RunJob(ctxT(t), Job{
		Name:  "build",
		Stage: "build",
		Files: map[string]string{"deploy/deployment.yml": "kind: Deployment\nimage: IMAGE\n"},
		Variables: []Variable{
			{Key: "GREETING", Value: "hello world"},
			{Key: "CA_FILE", Value: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", File: true},
		},
		Script: []string{
			`echo "greeting=$GREETING"`,
			`echo "dir=$CI_PROJECT_DIR pwd=$(pwd)"`,
			`grep -c IMAGE deploy/deployment.yml`,
			`head -1 "$CA_FILE"`,
			`echo "cafile=$CA_FILE"`,
			`git rev-parse HEAD`,
		},
	})
	requireStatus(t, r, StatusSuccess)
	want := []string{StagePrepare, StageGetSources, StageBuildScript, StageCleanupFileVariables}
	if !reflect.DeepEqual(r.Stages, want) {
		t.Errorf("stages %v, want %v", r.Stages, want)
	}
	k := kinds(r.Calls)
	if k[0] != "config" || k[1] != "prepare" || k[len(k)-1] != "cleanup" {
		t.Errorf("calls %v: want config, prepare, run..., cleanup", k)
	}
	for _, c := range r.Calls {
		if c.ExitCode != 0 {
			t.Errorf("call %s %s exited %d", c.Kind, c.Stage, c.ExitCode)
		}
	}
	log := StripANSI(r.Log)
	if !strings.HasSuffix(r.ProjectDir, "/group/project") {
		t.Errorf("project dir %q: want <builds_dir>/group/project", r.ProjectDir)
	}
	for _, s := range []string{
		"greeting=hello world",
		fmt.Sprintf("dir=%s pwd=%s", r.ProjectDir, r.ProjectDir),
		"-----BEGIN CERTIFICATE-----",
		"cafile=" + r.ProjectDir + ".tmp/CA_FILE",
		"$ echo \"greeting=$GREETING\"",
		"Job succeeded",
	} {
		if !strings.Contains(log, s) {
			t.Errorf("log lacks %q", s)
		}
	}
	if !strings.Contains(r.Log, ansiBoldGreen+`$ echo "greeting=$GREETING"`+ansiReset) {
		t.Error("commands are not echoed in bold green")
	}
	if !strings.Contains(r.Log, "section_start:") || !strings.Contains(r.Log, ":step_script\r") {
		t.Error("no step_script section in the log")
	}
	var p struct {
		ID      int `json:"id"`
		GitInfo struct {
			Sha string `json:"sha"`
		} `json:"git_info"`
	}
	if err := json.Unmarshal(r.PayloadJSON, &p); err != nil || p.ID != r.ID {
		t.Errorf("payload: %v, id %d want %d", err, p.ID, r.ID)
	}
	if !strings.Contains(log, p.GitInfo.Sha) {
		t.Errorf("the checkout is not at the pipeline's sha %s", p.GitInfo.Sha)
	}
	// cleanup_file_variables removed the File variable and GITLAB_ENV.
	for _, f := range []string{"CA_FILE", "gitlab_runner_env"} {
		if _, err := os.Stat(filepath.Join(r.ProjectDir+".tmp", f)); !os.IsNotExist(err) {
			t.Errorf("%s still in %s.tmp: %v", f, r.ProjectDir, err)
		}
	}
}

func TestFailingJob(t *testing.T) {
	// 17.9+ reports the script's own exit code (BUILD_EXIT_CODE_FILE).
	d := newDriver(t, func(c *Config) { c.RunnerVersion = Runner18 })
	r := d.RunJob(ctxT(t), Job{
		Name:        "fail",
		Script:      []string{"echo before-fail", "exit 3", "echo never-printed"},
		AfterScript: []string{`echo "after-ran status=$CI_JOB_STATUS"`},
		Artifacts:   []Artifact{{Name: "logs", Paths: []string{"out.txt"}, When: "always"}},
	})
	requireStatus(t, r, StatusFailed)
	if r.FailureReason != ReasonScriptFailure {
		t.Errorf("failure reason %q, want %q", r.FailureReason, ReasonScriptFailure)
	}
	if r.ScriptExitCode != 3 {
		t.Errorf("script exit code %d, want 3 (from BUILD_EXIT_CODE_FILE)", r.ScriptExitCode)
	}
	want := []string{StagePrepare, StageGetSources, StageBuildScript, StageAfterScript, StageUploadOnFailure, StageCleanupFileVariables}
	if !reflect.DeepEqual(r.Stages, want) {
		t.Errorf("stages %v, want %v", r.Stages, want)
	}
	log := StripANSI(r.Log)
	for _, s := range []string{"before-fail", "after-ran status=failed", "ERROR: Job failed: exit code 3"} {
		if !strings.Contains(log, s) {
			t.Errorf("log lacks %q", s)
		}
	}
	if strings.Contains(log, "never-printed") {
		t.Error("the script went on after exit 3")
	}
	for _, c := range r.Calls {
		if c.Kind == "run" && c.Stage == StageBuildScript && c.ExitCode != 1 {
			t.Errorf("ferry run build_script exited %d, want BUILD_FAILURE_EXIT_CODE 1", c.ExitCode)
		}
	}
	if last := r.Calls[len(r.Calls)-1]; last.Kind != "cleanup" {
		t.Errorf("last call %s, want cleanup", last.Kind)
	}
}

// procsWith lists the pids whose command line contains marker.
func procsWith(marker string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(marker)) {
			out = append(out, e.Name()+":"+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

func TestCancelMidScript(t *testing.T) {
	d := newDriver(t, nil)
	marker := fmt.Sprintf("ferrydrvmark%d", time.Now().UnixNano())
	r := d.RunJob(ctxT(t), Job{
		Name: "cancel",
		Script: []string{
			fmt.Sprintf("(exec -a %s-bg sleep 1000) &", marker),
			"echo started-" + marker,
			fmt.Sprintf("(exec -a %s-fg sleep 1000)", marker),
			"echo not-reached",
		},
		AfterScript: []string{`echo "after-cancel status=$CI_JOB_STATUS"`},
		CancelOnLog: "started-" + marker,
	})
	requireStatus(t, r, StatusCanceled)
	deadline := time.Now().Add(5 * time.Second)
	var left []string
	for {
		if left = procsWith(marker); len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("processes survived the cancel: %v", left)
	}
	log := StripANSI(r.Log)
	if strings.Contains(log, "not-reached") {
		t.Error("the script went on after the cancel")
	}
	if !strings.Contains(log, "after-cancel status=canceled") {
		t.Errorf("after_script did not run after the cancel:\n%s", log)
	}
	if last := r.Calls[len(r.Calls)-1]; last.Kind != "cleanup" {
		t.Errorf("last call %s, want cleanup", last.Kind)
	}
	for _, c := range r.Calls {
		if c.Stage == StageBuildScript {
			if !c.Signaled {
				t.Error("build_script was not signalled")
			}
			if c.PipeHeldOpen {
				t.Error("a process left by ferry run held the job log pipe open")
			}
			if c.Duration > 4*time.Second {
				t.Errorf("ferry run took %v to stop after SIGTERM (graceful timeout 5s)", c.Duration)
			}
		}
	}
}

func TestTimeoutSkipsAfterScript(t *testing.T) {
	d := newDriver(t, nil)
	r := d.RunJob(ctxT(t), Job{
		Name:        "slow",
		Script:      []string{"sleep 30"},
		AfterScript: []string{"echo after-timeout"},
		Timeout:     2 * time.Second,
	})
	requireStatus(t, r, StatusFailed)
	if r.FailureReason != ReasonTimeout {
		t.Errorf("reason %q, want %q", r.FailureReason, ReasonTimeout)
	}
	if strings.Contains(r.Log, "after-timeout") {
		t.Error("after_script ran after a timeout")
	}
	if last := r.Calls[len(r.Calls)-1]; last.Kind != "cleanup" {
		t.Errorf("last call %s, want cleanup", last.Kind)
	}
}

func TestUnknownStageRuns(t *testing.T) {
	d := newDriver(t, nil)
	r := d.RunJob(ctxT(t), Job{
		Name:   "steps",
		Script: []string{"echo main"},
		Steps:  []Step{{Name: "foo", Script: []string{"echo in-step-foo"}}},
	})
	requireStatus(t, r, StatusSuccess)
	if !reflect.DeepEqual(r.Stages, []string{StagePrepare, StageGetSources, StageBuildScript, "step_foo", StageCleanupFileVariables}) {
		t.Errorf("stages %v", r.Stages)
	}
	if !strings.Contains(StripANSI(r.Log), "in-step-foo") {
		t.Error("step_foo did not run")
	}
}

func TestStepScriptStageName(t *testing.T) {
	d := newDriver(t, func(c *Config) { c.StepScript = true })
	r := d.RunJob(ctxT(t), Job{Name: "s", Script: []string{"echo via-step-script"}})
	requireStatus(t, r, StatusSuccess)
	if r.Stages[2] != StageStepScript || !strings.Contains(r.Log, "via-step-script") {
		t.Errorf("stages %v", r.Stages)
	}
}

func TestConcurrentJobs(t *testing.T) {
	d := newDriver(t, nil)
	const n = 10
	results := make([]*JobResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := fmt.Sprintf("me-%d", i)
			results[i] = d.RunJob(ctxT(t), Job{
				Name:      fmt.Sprintf("job%d", i),
				Variables: []Variable{{Key: "ME", Value: me}},
				Script: []string{
					`echo "$ME" > whoami.txt`,
					`echo "id=$CI_JOB_ID cpid=$CI_CONCURRENT_PROJECT_ID dir=$CI_PROJECT_DIR"`,
					`sleep 2`,
					`test "$(cat whoami.txt)" = "$ME"`,
					`echo "still-$ME"`,
				},
			})
		}()
	}
	wg.Wait()
	ids, cpids, dirs := map[int]bool{}, map[int]bool{}, map[string]bool{}
	for i, r := range results {
		requireStatus(t, r, StatusSuccess)
		ids[r.ID] = true
		cpids[r.ConcurrentProjectID] = true
		dirs[r.ProjectDir] = true
		log := StripANSI(r.Log)
		if !strings.Contains(log, fmt.Sprintf("still-me-%d", i)) {
			t.Errorf("job %d: own marker missing", i)
		}
		for j := range n {
			if j != i && strings.Contains(log, fmt.Sprintf("me-%d\n", j)) {
				t.Errorf("job %d's log has job %d's output", i, j)
			}
		}
		if !strings.Contains(log, fmt.Sprintf("id=%d cpid=%d dir=%s", r.ID, r.ConcurrentProjectID, r.ProjectDir)) {
			t.Errorf("job %d: CI_JOB_ID/CI_CONCURRENT_PROJECT_ID/CI_PROJECT_DIR not as the driver set them", i)
		}
	}
	if len(ids) != n || len(cpids) != n || len(dirs) != n {
		t.Errorf("distinct job ids %d, concurrent project ids %d, project dirs %d; want %d each", len(ids), len(cpids), len(dirs), n)
	}
}

func TestMaskedVariableNeverInLog(t *testing.T) {
	d := newDriver(t, nil)
	secret := "s3cr3tVal-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	r := d.RunJob(ctxT(t), Job{
		Name:   "mask",
		Script: []string{`echo "token=$DEPLOY_TOKEN"`, `echo "$DEPLOY_TOKEN" >&2`},
		Variables: []Variable{
			{Key: "DEPLOY_TOKEN", Value: secret, Masked: true},
		},
	})
	requireStatus(t, r, StatusSuccess)
	if strings.Contains(r.Log, secret) {
		t.Fatal("masked value in the job log")
	}
	if !strings.Contains(r.Log, "token=[MASKED]") {
		t.Errorf("masked value not replaced by [MASKED]:\n%s", StripANSI(r.Log))
	}
}

func TestGitlabEnvModes(t *testing.T) {
	for _, tc := range []struct {
		mode GitlabEnvMode
		want string
	}{
		{GitlabEnvAllexport, "FOO=[a b]"},
		{GitlabEnvExportLines, `FOO=["a b"]`},
	} {
		d := newDriver(t, func(c *Config) { c.GitlabEnv = tc.mode })
		r := d.RunJob(ctxT(t), Job{
			Name:   "genv",
			Script: []string{`echo 'FOO="a b"' >> "$GITLAB_ENV"`},
			Steps:  []Step{{Name: "check", Script: []string{`echo "FOO=[$FOO]"`}}},
		})
		requireStatus(t, r, StatusSuccess)
		if !strings.Contains(r.Log, tc.want) {
			t.Errorf("mode %d: log lacks %q:\n%s", tc.mode, tc.want, StripANSI(r.Log))
		}
	}
}

func TestPipelineSuccessPath(t *testing.T) {
	d := newDriver(t, func(c *Config) { c.GitLabDotenv = true })
	pr := d.RunPipeline(ctxT(t), Pipeline{
		Stages: []string{"image", "deploy"},
		Files:  map[string]string{"deployment.yml": "image: IMAGE\n"},
		Jobs: []Job{
			{
				Name: "kaniko", Stage: "image",
				Script: []string{`echo "IMAGE=registry.example.com/app:$CI_COMMIT_SHORT_SHA" >> docker.env`, `echo built > build.txt`},
				Artifacts: []Artifact{
					{Paths: []string{"build.txt"}},
					DotenvReport("docker.env"),
				},
			},
			{
				Name: "kube", Stage: "deploy",
				Needs: []Need{{Job: "kaniko"}},
				Script: []string{
					`sed -i -e "s|IMAGE|${IMAGE}|g" deployment.yml`,
					`cat deployment.yml`,
					`cat build.txt`,
				},
			},
		},
	})
	if pr.Status != StatusSuccess {
		for _, n := range pr.Order {
			requireStatus(t, pr.Jobs[n], StatusSuccess)
		}
	}
	k, kube := pr.Jobs["kaniko"], pr.Jobs["kube"]
	if !reflect.DeepEqual(k.Stages, []string{StagePrepare, StageGetSources, StageBuildScript, StageUploadOnSuccess, StageCleanupFileVariables}) {
		t.Errorf("kaniko stages %v", k.Stages)
	}
	if len(k.Dotenv) != 1 || k.Dotenv[0].Key != "IMAGE" {
		t.Errorf("GitLab did not take IMAGE from the dotenv report: %v", k.Dotenv)
	}
	if !reflect.DeepEqual(kube.Stages, []string{StagePrepare, StageGetSources, StageDownloadArtifacts, StageBuildScript, StageCleanupFileVariables}) {
		t.Errorf("kube stages %v", kube.Stages)
	}
	log := StripANSI(kube.Log)
	if !strings.Contains(log, "image: registry.example.com/app:") || !strings.Contains(log, "built") {
		t.Errorf("kube did not get kaniko's image and artifacts:\n%s", log)
	}
	var p struct {
		Dependencies []struct {
			ID   int    `json:"id"`
			Name string `json:"name"`
		} `json:"dependencies"`
	}
	if err := json.Unmarshal(kube.PayloadJSON, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Dependencies) != 1 || p.Dependencies[0].Name != "kaniko" || p.Dependencies[0].ID != k.ID {
		t.Errorf("kube's dependencies[] = %+v, want kaniko (%d)", p.Dependencies, k.ID)
	}
}

func TestPipelineFailurePath(t *testing.T) {
	d := newDriver(t, nil)
	pr := d.RunPipeline(ctxT(t), Pipeline{
		Jobs: []Job{
			{Name: "build", Stage: "build", Script: []string{"exit 1"}},
			{Name: "deploy", Stage: "deploy", Script: []string{"echo deploying"}},
			{Name: "notify", Stage: "deploy", When: "always", Script: []string{"echo notifying"}},
			{Name: "rollback", Stage: "deploy", When: "on_failure", Script: []string{"echo rolling-back"}},
		},
	})
	if pr.Status != StatusFailed {
		t.Errorf("pipeline status %q, want failed", pr.Status)
	}
	requireStatus(t, pr.Jobs["build"], StatusFailed)
	requireStatus(t, pr.Jobs["deploy"], StatusSkipped)
	requireStatus(t, pr.Jobs["notify"], StatusSuccess)
	requireStatus(t, pr.Jobs["rollback"], StatusSuccess)
	if pr.Jobs["deploy"].Calls != nil {
		t.Error("a skipped job called the executor")
	}
}

// TestCancelEscalatesToSIGKILL: a script ignoring SIGTERM is killed with the
// group after the graceful timeout, and nothing it started survives.
func TestCancelEscalatesToSIGKILL(t *testing.T) {
	d := newDriver(t, func(c *Config) { c.GracefulKillTimeout = 2 * time.Second })
	marker := fmt.Sprintf("ferrydrvkill%d", time.Now().UnixNano())
	r := d.RunJob(ctxT(t), Job{
		Name: "stubborn",
		Script: []string{
			"trap '' TERM",
			"echo started-" + marker,
			fmt.Sprintf("(exec -a %s sleep 1000)", marker),
		},
		CancelOnLog: "started-" + marker,
	})
	requireStatus(t, r, StatusCanceled)
	deadline := time.Now().Add(5 * time.Second)
	var left []string
	for {
		if left = procsWith(marker); len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("processes survived SIGKILL of ferry's group: %v", left)
	}
	if last := r.Calls[len(r.Calls)-1]; last.Kind != "cleanup" {
		t.Errorf("last call %s, want cleanup", last.Kind)
	}
}
