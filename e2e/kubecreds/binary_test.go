package kubecreds_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// ferryBinary builds ferry once for the test binary (scripts/build.sh, the
// engine embedded, as shipped).
func ferryBinary(t *testing.T) string {
	t.Helper()
	bin, err := ferrybuild.Shared()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

type world struct {
	d        *runnerdriver.Driver
	base     string
	stateDir string
}

func newWorld(t *testing.T, extra ...string) *world {
	t.Helper()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	d, err := runnerdriver.New(runnerdriver.Config{
		FerryBinary: ferryBinary(t),
		BaseDir:     filepath.Join(base, "runner"),
		ExtraArgs:   append([]string{"--state-dir=" + state}, extra...),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &world{d: d, base: base, stateDir: state}
}

// assertNowhere fails if any of the values is in the log or in any file
// under the world's directories (build dirs, state dir, runner temp dirs).
func (w *world) assertNowhere(t *testing.T, res *runnerdriver.JobResult, values ...string) {
	t.Helper()
	for _, v := range values {
		if strings.Contains(res.Log, v) {
			t.Errorf("secret %.12q... in the job log", v)
		}
	}
	filepath.Walk(w.base, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || strings.Contains(p, "/runner-bin/") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, v := range values {
			if strings.Contains(string(data), v) {
				t.Errorf("secret %.12q... in file %s", v, p)
			}
		}
		return nil
	})
}

// jobDirs lists what is left of job state directories.
func (w *world) jobDirs(t *testing.T) []string {
	entries, err := os.ReadDir(filepath.Join(w.stateDir, "jobs"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

const seedDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: shark-app
spec:
  replicas: 1
  selector:
    matchLabels: {app: shark-app}
  template:
    metadata:
      labels: {app: shark-app}
    spec:
      containers:
      - name: shark-app
        image: IMAGE
`

// TestSeedDeployScriptUnchanged runs seed 000's kube job as written: the
// script decodes the variable itself. ferry must leave KUBECONFIG alone,
// still mask the token, say which lines can go, and remove the decoded copy.
func TestSeedDeployScriptUnchanged(t *testing.T) {
	ctx := context.Background()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	res := w.d.RunJob(ctx, runnerdriver.Job{
		Name: "kube", Stage: "deploy",
		Variables: []runnerdriver.Variable{{Key: "KUBECONFIG", Value: sa.KubeconfigBase64, Masked: true}, {Key: "IMAGE", Value: "registry.example.com/shark-app:1"}},
		Files:     map[string]string{"deployment.yml": seedDeployment},
		Script: []string{
			"echo $KUBECONFIG | base64 --decode > kubeconfig",
			"export KUBECONFIG=$(pwd)/kubeconfig",
			`sed -i -e "s|IMAGE|${IMAGE}|g" deployment.yml`,
			"kubectl apply -f deployment.yml",
		},
	})
	if !res.Succeeded() {
		t.Fatalf("job failed (%s): %s", res.FailureReason, res.Log)
	}
	for _, want := range []string{"these lines of the job's script can be deleted", "  echo $KUBECONFIG | base64 --decode > kubeconfig", "as system:serviceaccount:example:gitlab-example, namespace example"} {
		if !strings.Contains(res.Log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	cs := kubernetes.NewForConfigOrDie(c.AdminRESTConfig())
	dep, err := cs.AppsV1().Deployments("example").Get(ctx, "shark-app", metav1.GetOptions{})
	if err != nil || dep.Spec.Template.Spec.Containers[0].Image != "registry.example.com/shark-app:1" {
		t.Fatalf("deployment: %v %v", dep, err)
	}
	if _, err := os.Stat(filepath.Join(res.ProjectDir, "kubeconfig")); !os.IsNotExist(err) {
		t.Errorf("decoded copy left in the project dir after cleanup: %v", err)
	}
	w.assertNowhere(t, res, sa.Token)
	if left := w.jobDirs(t); len(left) != 0 {
		t.Errorf("job state left after cleanup: %v", left)
	}
}

// TestScriptSeesMaskedSecrets: ferry's kubeconfig is used and whatever the
// script prints of it is masked; nothing is left anywhere after cleanup.
func TestScriptSeesMaskedSecrets(t *testing.T) {
	ctx := context.Background()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	res := w.d.RunJob(ctx, runnerdriver.Job{
		Name: "show",
		Variables: []runnerdriver.Variable{
			{Key: "KUBECONFIG", Value: sa.KubeconfigBase64, Masked: true},
			{Key: "KUBE_TOKEN", Value: sa.Token}, // not masked by the runner: ferry must
		},
		Script: []string{
			`case "$KUBECONFIG" in /*) echo "ferry kubeconfig in use";; esac`,
			"cat $KUBECONFIG",
			"echo $KUBE_TOKEN",
			"base64 -w0 $KUBECONFIG; echo",
			"grep token: $KUBECONFIG | tr -d ' '",
			"kubectl get configmaps -n example",
		},
	})
	if !res.Succeeded() {
		t.Fatalf("job failed (%s): %s", res.FailureReason, res.Log)
	}
	if !strings.Contains(res.Log, "ferry kubeconfig in use") || !strings.Contains(res.Log, "[MASKED]") {
		t.Fatalf("log:\n%s", res.Log)
	}
	w.assertNowhere(t, res, sa.Token, base64.StdEncoding.EncodeToString([]byte(sa.Token)), sa.KubeconfigBase64)
	if left := w.jobDirs(t); len(left) != 0 {
		t.Errorf("job state (and its kubeconfig) left after cleanup: %v", left)
	}
}

// TestBadVariablesThroughFerry: errors reach the job log as one line and
// fail the job as a build (script) failure, not a runner system failure.
func TestBadVariablesThroughFerry(t *testing.T) {
	ctx := context.Background()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(sa.Kubeconfig), sa.Token, "eyJhbGciOiJSUzI1NiJ9.d3Jvbmc.c2ln", 1)
	cases := map[string]struct {
		vars []runnerdriver.Variable
		want string
	}{
		"bad base64":   {[]runnerdriver.Variable{{Key: "KUBECONFIG", Value: "YXBp*dmVy"}}, "ferry: KUBECONFIG: invalid base64 at byte 5"},
		"wrong token":  {[]runnerdriver.Variable{{Key: "KUBECONFIG", Value: base64.StdEncoding.EncodeToString([]byte(bad))}}, "rejected the credentials (401 Unauthorized)"},
		"not a config": {[]runnerdriver.Variable{{Key: "KUBECONFIG", Value: base64.StdEncoding.EncodeToString([]byte(seedDeployment))}}, "not a kubeconfig"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			res := w.d.RunJob(ctx, runnerdriver.Job{Name: "bad", Variables: tc.vars, Script: []string{"echo never"}})
			if res.Succeeded() || res.FailureReason != "script_failure" {
				t.Fatalf("status %s reason %s", res.Status, res.FailureReason)
			}
			if !strings.Contains(res.Log, tc.want) {
				t.Fatalf("log lacks %q:\n%s", tc.want, res.Log)
			}
			if strings.Contains(res.Log, "$ echo never") {
				t.Fatal("the script ran")
			}
		})
	}
}

// TestKilledJobSweptByStaleSweep: a job whose cleanup never ran (the runner
// was killed) leaves its kubeconfig only until the stale sweep.
func TestKilledJobSweptByStaleSweep(t *testing.T) {
	ctx := context.Background()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	// A job that is killed: prepare ran, cleanup never did. The driver
	// always runs cleanup, so call prepare the way the runner does and stop.
	payload, _ := json.Marshal(map[string]any{
		"id":        4242,
		"token":     "glcbt-e2e-4242",
		"variables": []map[string]any{{"key": "KUBECONFIG", "value": sa.KubeconfigBase64, "masked": true}},
		"steps":     []map[string]any{{"name": "script", "script": []string{"kubectl get pods"}, "when": "on_success"}},
	})
	payloadFile := filepath.Join(w.base, "job-response.json")
	if err := os.WriteFile(payloadFile, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "JOB_RESPONSE_FILE="+payloadFile,
		"CUSTOM_ENV_CI_JOB_ID=4242", "CUSTOM_ENV_CI_SERVER_URL=https://gitlab.example.com",
		"CUSTOM_ENV_CI_PROJECT_DIR="+filepath.Join(w.base, "builds", "p"),
		"CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN=ferrydrv", "CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID=0",
		"CUSTOM_ENV_KUBECONFIG="+sa.KubeconfigBase64,
		"BUILD_FAILURE_EXIT_CODE=1", "SYSTEM_FAILURE_EXIT_CODE=2",
	)
	prep := exec.Command(ferryBinary(t), "prepare", "--state-dir="+w.stateDir)
	prep.Env = env
	if out, err := prep.CombinedOutput(); err != nil {
		t.Fatalf("prepare: %v\n%s", err, out)
	}
	left := w.jobDirs(t)
	if len(left) != 1 {
		t.Fatalf("job dirs after prepare: %v", left)
	}
	kc := filepath.Join(w.stateDir, "jobs", left[0], "kube", "kubeconfig")
	if _, err := os.Stat(kc); err != nil {
		t.Fatalf("no kubeconfig after prepare: %v", err)
	}
	// Age it: the killed job started two days ago. The next job's prepare
	// sweeps state dirs older than --stale-after (default 24h).
	meta := filepath.Join(w.stateDir, "jobs", left[0], "meta.json")
	var m map[string]any
	data, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["created"] = time.Now().Add(-48 * time.Hour).Format(time.RFC3339Nano)
	data, _ = json.Marshal(m)
	if err := os.WriteFile(meta, data, 0o600); err != nil {
		t.Fatal(err)
	}
	res := w.d.RunJob(ctx, runnerdriver.Job{Name: "next", Script: []string{"true"}})
	if !res.Succeeded() {
		t.Fatalf("next job: %s", res.Log)
	}
	if _, err := os.Stat(kc); !os.IsNotExist(err) {
		t.Fatalf("kubeconfig survived the stale sweep: %v", err)
	}
}
