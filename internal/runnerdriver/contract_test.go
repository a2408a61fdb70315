package runnerdriver

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
)

// TestJobenvReadsWhatTheDriverGives: ferry's own parsing (pkg/jobenv) reads
// the driver's process environment and JOB_RESPONSE_FILE as intended.
func TestJobenvReadsWhatTheDriverGives(t *testing.T) {
	dir := t.TempDir()
	jr := &jobRun{d: &Driver{cfg: Config{ServerURL: "https://gitlab.example.com", RunnerShortToken: "ferrydrv",
		Env: []string{"PATH=/usr/bin", "HOME=/root"}}, shimDir: "/shim"},
		job: Job{Name: "kube", Stage: "deploy", Script: []string{"echo"},
			Variables: []Variable{{Key: "KUBECONFIG", Value: "c2VjcmV0LXRva2Vu", Masked: true}, {Key: "CA", Value: "pem\n", File: true}},
			Artifacts: []Artifact{DotenvReport("docker.env")}},
		jc: &jobCtx{pipelineID: 7, projectID: 42, projectPath: "group/shark-app", ref: "master",
			sha: "90eedc043e20c0a6b73a8985d50e4aa89f8844aa", repoURL: "file:///x",
			deps: []dependency{{ID: 701, Token: jobToken(701), Name: "kaniko"}}},
		id: 702, token: jobToken(702), concurrentProjectID: 3, jobStatus: "running",
		tmpDir: dir, buildsDir: "/b/ferrydrv/3", projectDir: "/b/ferrydrv/3/group/shark-app"}
	jr.responseFile = filepath.Join(dir, "response.json")
	b, err := jr.payloadJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jr.responseFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := jobenv.FromEnviron(append(jr.env(), "BUILD_EXIT_CODE_FILE="+filepath.Join(dir, "code")))
	if err := env.RequireRunner(); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"CI_JOB_ID": "702", "CI_PROJECT_DIR": jr.projectDir, "CI_BUILDS_DIR": jr.buildsDir,
		"CI_CONCURRENT_PROJECT_ID": "3", "CI_RUNNER_SHORT_TOKEN": "ferrydrv", "CI_SERVER_URL": "https://gitlab.example.com",
		"KUBECONFIG": "c2VjcmV0LXRva2Vu", "CA": "pem\n", "CI_PROJECT_PATH": "group/shark-app",
	} {
		if got, _ := env.JobVar(k); got != want {
			t.Errorf("JobVar(%s) = %q, want %q", k, got, want)
		}
	}
	p, err := env.Payload()
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != 702 || p.JobInfo.Name != "kube" || p.GitInfo.Sha != jr.jc.sha || strconv.Itoa(int(p.JobInfo.ProjectID)) != "42" {
		t.Errorf("payload header: %+v %+v %+v", p.ID, p.JobInfo, p.GitInfo)
	}
	if len(p.Dependencies) != 1 || p.Dependencies[0].Name != "kaniko" || p.Dependencies[0].ID != 701 {
		t.Errorf("dependencies %+v", p.Dependencies)
	}
	if len(p.Artifacts) != 1 || p.Artifacts[0].ArtifactType != "dotenv" || p.Artifacts[0].ArtifactFormat != "gzip" {
		t.Errorf("artifacts %+v", p.Artifacts)
	}
	masked := map[string]bool{}
	for _, v := range p.MaskedValues() {
		masked[v] = true
	}
	if !masked["c2VjcmV0LXRva2Vu"] || !masked[jobToken(702)] {
		t.Errorf("masked values %v", p.MaskedValues())
	}
}
