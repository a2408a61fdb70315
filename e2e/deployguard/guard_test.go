package deployguard_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	rd "gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/deployguard"
)

// manifest is the project's deployment: a Deployment of ${IMAGE}, and
// with extra a ConfigMap only that version has (to prove a refused apply
// sends nothing, not even the objects it would create).
func manifest(extra bool) string {
	m := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: ${IMAGE}
`
	if extra {
		m += `---
apiVersion: v1
kind: ConfigMap
metadata:
  name: only-in-old
data:
  a: b
`
	}
	return m
}

// deploy is one pipeline of one project on its own runner host: a job
// `kubectl apply --envsubst -f k8s` with the namespace's ServiceAccount.
type deploy struct {
	project   string
	projectID int
	pipeline  int // the pipeline's id
	job       int // its deploy job's id
	image     string
	vars      []rd.Variable
	args      []string // the admin's extra ferry flags
	runner    string   // runner version (default 16.11)
	extra     bool
}

func run(t *testing.T, sa *cluster.Credentials, d deploy) *rd.JobResult {
	t.Helper()
	base := t.TempDir()
	home := filepath.Join(base, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	drv, err := rd.New(rd.Config{
		FerryBinary: ferry, BaseDir: base, RunnerVersion: d.runner,
		// --private-tmp=off: the driver's repositories live under the
		// test's /tmp dir, which a private /tmp hides from get_sources.
		// The deploy lock is on, as it ships: every job takes it.
		ExtraArgs:       append([]string{"--state-dir=" + filepath.Join(base, "state"), "--private-tmp=off"}, d.args...),
		Env:             []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"},
		FirstPipelineID: d.pipeline, FirstJobID: d.job,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vars := append([]rd.Variable{
		{Key: "KUBECONFIG", Value: sa.KubeconfigBase64, Masked: true},
		{Key: "IMAGE", Value: d.image, Public: true},
	}, d.vars...)
	pr := drv.RunPipeline(ctx, rd.Pipeline{ProjectPath: d.project, ProjectID: d.projectID,
		Files: map[string]string{"k8s/app.yml": manifest(d.extra)},
		Jobs: []rd.Job{{Name: "deploy", Stage: "deploy", Variables: vars,
			Script: []string{"kubectl apply --envsubst -f k8s"}}}})
	j := pr.Jobs["deploy"]
	if j == nil {
		t.Fatal("the deploy job did not run")
	}
	if pr.ID != d.pipeline || j.ID != d.job {
		t.Fatalf("driver ran pipeline %d job %d, want %d and %d", pr.ID, j.ID, d.pipeline, d.job)
	}
	return j
}

func wantSuccess(t *testing.T, j *rd.JobResult, lines ...string) {
	t.Helper()
	log := rd.StripANSI(j.Log)
	if j.Status != rd.StatusSuccess {
		t.Fatalf("job %d: %s (%s)\n%s\nsystem log (cleanup, the lock holder's log if it ended early):\n%s", j.ID, j.Status, j.FailureReason, log, j.SystemLog)
	}
	for _, l := range lines {
		if !strings.Contains(log, l) {
			t.Errorf("job %d: log lacks %q:\n%s", j.ID, l, log)
		}
	}
}

func wantRefused(t *testing.T, j *rd.JobResult, line string) {
	t.Helper()
	log := rd.StripANSI(j.Log)
	if j.Status != rd.StatusFailed || j.FailureReason != "script_failure" {
		t.Fatalf("job %d: %s (%s), want a script failure\n%s\nsystem log (cleanup, the lock holder's log if it ended early):\n%s", j.ID, j.Status, j.FailureReason, log, j.SystemLog)
	}
	if !strings.Contains(log, line) {
		t.Errorf("job %d: log lacks the refusal %q:\n%s\nsystem log:\n%s", j.ID, line, log, j.SystemLog)
	}
	if strings.Contains(log, " configured") || strings.Contains(log, " created") || strings.Contains(log, " unchanged") {
		t.Errorf("job %d: a refused apply applied something:\n%s", j.ID, log)
	}
}

func image(t *testing.T, ns string) *appsv1.Deployment {
	t.Helper()
	d, err := c.Client().AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantImage(t *testing.T, ns, img string, pipeline string) {
	t.Helper()
	d := image(t, ns)
	if got := d.Spec.Template.Spec.Containers[0].Image; got != img {
		t.Errorf("deployment image %q, want %q", got, img)
	}
	if got := d.Annotations[deployguard.KeyPipeline]; got != pipeline {
		t.Errorf("recorded pipeline %q, want %q (annotations %v)", got, pipeline, d.Annotations)
	}
}

func credentials(t *testing.T, ns string) *cluster.Credentials {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sa, err := c.ServiceAccountCredentials(ctx, ns, "deployer", "admin")
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// An older pipeline that runs after a newer one is refused before anything
// is sent; a rollback (FERRY_ROLLBACK=true, or a retried job of the older
// pipeline) goes through.
func TestOlderPipelineRefused(t *testing.T) {
	ns := "guard-order"
	sa := credentials(t, ns)
	const proj, pid = "team-a/app", 101

	// Pipeline 81000 was created first (job 840000), pipeline 82000 later
	// (job 850000); 82000's deploy runs first. (Ids outside the driver's
	// random range: another test's job with the same id is the same job to
	// ferry on this host.) Runner 19.3: the payload's
	// job_info.pipeline_id names the pipeline, not the job's variables.
	wantSuccess(t, run(t, sa, deploy{project: proj, projectID: pid, pipeline: 82000, job: 850000, image: "app:v2", runner: "19.3.0"}),
		"deployment.apps/web created")
	wantImage(t, ns, "app:v2", "82000")

	j := run(t, sa, deploy{project: proj, projectID: pid, pipeline: 81000, job: 840000, image: "app:v1", runner: "19.3.0", extra: true,
		// A copied variable cannot pass the older pipeline for a newer one.
		vars: []rd.Variable{{Key: "CI_PIPELINE_ID", Value: "999999"}, {Key: deployguard.EnvPipeline, Value: "999999"}}})
	wantRefused(t, j, "ferry: deployment.apps/web in namespace guard-order was deployed by pipeline 82000 of team-a/app (id 101), newer than this pipeline 81000: refusing to deploy an older pipeline over a newer one (to roll back on purpose, retry this job in GitLab or set FERRY_ROLLBACK=true)")
	wantImage(t, ns, "app:v2", "82000")
	if _, err := c.Client().CoreV1().ConfigMaps(ns).Get(context.Background(), "only-in-old", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the refused apply created its new ConfigMap (err %v): objects were sent before all were checked", err)
	}

	// A deliberate rollback, by variable.
	wantSuccess(t, run(t, sa, deploy{project: proj, projectID: pid, pipeline: 81000, job: 840001, image: "app:v1",
		vars: []rd.Variable{{Key: "FERRY_ROLLBACK", Value: "true"}}}),
		"ferry: deployment.apps/web in namespace guard-order: rolling back from pipeline 82000 to pipeline 81000 (FERRY_ROLLBACK=true)",
		"deployment.apps/web configured")
	wantImage(t, ns, "app:v1", "81000")

	// The newer pipeline deploys again (newer over older: no question), then
	// GitLab's rollback: the older pipeline's deploy job retried, a new job
	// (id 860000, created after job 850001).
	wantSuccess(t, run(t, sa, deploy{project: proj, projectID: pid, pipeline: 82000, job: 850001, image: "app:v2"}), "deployment.apps/web configured")
	wantImage(t, ns, "app:v2", "82000")
	wantSuccess(t, run(t, sa, deploy{project: proj, projectID: pid, pipeline: 81000, job: 860000, image: "app:v1"}),
		"rolling back from pipeline 82000 to pipeline 81000 (job 860000 is a retry, created after job 850001 that deployed pipeline 82000)",
		"deployment.apps/web configured")
	wantImage(t, ns, "app:v1", "81000")
}

// Another project's apply over an owned object is refused, and allowed when
// the admin shares the projects or the job opts in; an object applied by
// hand is taken over.
func TestOtherProjectRefused(t *testing.T) {
	ns := "guard-owner"
	sa := credentials(t, ns)
	a := deploy{project: "team-a/app", projectID: 101, pipeline: 300, job: 830000, image: "a:1"}
	wantSuccess(t, run(t, sa, a), "deployment.apps/web created")
	wantImage(t, ns, "a:1", "300")

	b := deploy{project: "team-b/app", projectID: 202, pipeline: 400, job: 831000, image: "b:1", extra: true}
	wantRefused(t, run(t, sa, b), "ferry: deployment.apps/web in namespace guard-owner belongs to project team-a/app (id 101), not to this project team-b/app (id 202): refusing to take it over (set FERRY_TAKEOVER=true in this job to take it over, or the runner admin shares the two projects with --deploy-share)")
	wantImage(t, ns, "a:1", "300")
	if _, err := c.Client().CoreV1().ConfigMaps(ns).Get(context.Background(), "only-in-old", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the refused apply created its new ConfigMap (err %v)", err)
	}

	// Shared by the admin (by path and by id).
	b.job, b.args = 831001, []string{"--deploy-share=team-a/app,202"}
	wantSuccess(t, run(t, sa, b), "deployment.apps/web configured")
	wantImage(t, ns, "b:1", "400")
	if got := image(t, ns).Annotations[deployguard.KeyProjectID]; got != "202" {
		t.Errorf("owner after the shared apply: project-id %q, want 202", got)
	}

	// Now B owns it: A is refused, and takes it back explicitly.
	a.pipeline, a.job, a.image = 301, 830001, "a:2"
	wantRefused(t, run(t, sa, a), "belongs to project team-b/app (id 202), not to this project team-a/app (id 101)")
	a.job, a.vars = 830002, []rd.Variable{{Key: "FERRY_TAKEOVER", Value: "true"}}
	wantSuccess(t, run(t, sa, a), "taking it over from project team-b/app (id 202) (FERRY_TAKEOVER=true)", "deployment.apps/web configured")
	wantImage(t, ns, "a:2", "301")
}

// Objects no ferry job applied (kubectl by hand, another tool) are taken
// over as before, and recorded from then on.
func TestHandAppliedTakenOver(t *testing.T) {
	ns := "guard-hand"
	sa := credentials(t, ns)
	one := int32(1)
	_, err := c.Client().AppsV1().Deployments(ns).Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Annotations: map[string]string{"owner": "someone"}},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "by-hand:1"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantSuccess(t, run(t, sa, deploy{project: "team-b/app", projectID: 202, pipeline: 50, job: 870000, image: "b:1"}), "deployment.apps/web configured")
	wantImage(t, ns, "b:1", "50")
	d := image(t, ns)
	for k, want := range map[string]string{deployguard.KeyProjectID: "202", deployguard.KeyProject: "team-b/app", deployguard.KeyJob: "870000"} {
		if d.Annotations[k] != want {
			t.Errorf("annotation %s=%q, want %q", k, d.Annotations[k], want)
		}
	}
}
