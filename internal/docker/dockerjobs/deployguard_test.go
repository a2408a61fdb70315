package dockerjobs_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/deployguard"
)

// guardRun is one pipeline of one project on a fresh runner host, whose
// one job runs script with the ferry way's variables.
type guardRun struct {
	project       string
	projectID     int
	pipeline, job int
	vars          []runnerdriver.Variable
	args          []string
}

// runGuarded: pipeline and job ids are outside the driver's random range
// (1000-9000): on one host, another test's job with the same id is the
// same job to ferry (its cleanup kills that job's processes).
func runGuarded(t *testing.T, r *dockertest.Remote, g guardRun, files map[string]string, script ...string) *runnerdriver.JobResult {
	t.Helper()
	d := newLockHost(t, g.pipeline, g.job, g.args...).d
	vars := append(ferryVars(r, dockertest.UserOK),
		runnerdriver.Variable{Key: "CI_REGISTRY", Value: r.Registry},
		runnerdriver.Variable{Key: "REG_USER", Value: r.RegUser},
		runnerdriver.Variable{Key: "REG_PASSWORD", Value: r.RegPass, Masked: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pr := d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: g.project, ProjectID: g.projectID, Files: files,
		Jobs: []runnerdriver.Job{{Name: "deploy", Stage: "deploy", Variables: append(vars, g.vars...),
			Script: append([]string{"docker login -u $REG_USER -p $REG_PASSWORD $CI_REGISTRY"}, script...)}}})
	res := pr.Jobs["deploy"]
	if res == nil || pr.ID != g.pipeline || res.ID != g.job {
		t.Fatalf("driver did not run pipeline %d job %d: %+v", g.pipeline, g.job, pr)
	}
	return res
}

func mustBeRefused(t *testing.T, res *runnerdriver.JobResult, line string) {
	t.Helper()
	log := runnerdriver.StripANSI(res.Log)
	if res.Status != runnerdriver.StatusFailed || res.FailureReason != "script_failure" {
		t.Fatalf("job %d: %s (%s), want a script failure:\n%s", res.ID, res.Status, res.FailureReason, log)
	}
	if !strings.Contains(log, line) {
		t.Fatalf("job %d: log lacks the refusal %q:\n%s", res.ID, line, log)
	}
}

// TestComposeDeployGuard: `docker-compose up -d` of one compose project
// through ferry's holder: an older pipeline after a newer one is refused
// and the container keeps the newer image; another project is refused;
// FERRY_ROLLBACK=true and the admin's --deploy-share let them through.
func TestComposeDeployGuard(t *testing.T) {
	r := need(t)
	v1, v2 := r.PushBusybox("guard-web:1"), r.PushBusybox("guard-web:2")
	t.Cleanup(func() { r.Docker("rm", "-f", "guardapp_web_1", "guardapp-web-1") })
	files := map[string]string{"docker-compose.yml": `version: "3"
services:
  web:
    image: ${IMAGE}
    command: ["sleep", "3600"]
`}
	up := func(g guardRun, image string) *runnerdriver.JobResult {
		g.vars = append(g.vars, runnerdriver.Variable{Key: "IMAGE", Value: image})
		return runGuarded(t, r, g, files, "docker-compose -p guardapp pull", "docker-compose --verbose -p guardapp up -d > up.log 2>&1 || { grep -v '^[[:space:]]*$' up.log | tail -n 60; docker ps -a; exit 1; }")
	}
	live := func() (image, pipeline, project string) {
		out := r.MustDocker("ps", "--filter", "label=com.docker.compose.project=guardapp", "--format",
			`{{.Image}} {{.Label "`+deployguard.KeyPipeline+`"}} {{.Label "`+deployguard.KeyProjectID+`"}}`)
		f := strings.Fields(out)
		if len(f) != 3 {
			t.Fatalf("compose project guardapp on the engine: %q", out)
		}
		return f[0], f[1], f[2]
	}
	want := func(image, pipeline, project string) {
		t.Helper()
		if i, p, pr := live(); i != image || p != pipeline || pr != project {
			t.Fatalf("guardapp runs %s of pipeline %s, project %s; want %s, %s, %s", i, p, pr, image, pipeline, project)
		}
	}

	a := guardRun{project: "team-a/app", projectID: 101}
	a.pipeline, a.job = 92000, 950000
	mustSucceed(t, up(a, v2))
	want(v2, "92000", "101")

	a.pipeline, a.job = 91000, 940000
	mustBeRefused(t, up(a, v1), "ferry: compose project guardapp was deployed by pipeline 92000 of team-a/app (id 101), newer than this pipeline 91000: refusing to deploy an older pipeline over a newer one")
	want(v2, "92000", "101")

	b := guardRun{project: "team-b/app", projectID: 202, pipeline: 93000, job: 960000}
	mustBeRefused(t, up(b, v1), "ferry: compose project guardapp belongs to project team-a/app (id 101), not to this project team-b/app (id 202)")
	want(v2, "92000", "101")

	a.job, a.vars = 940001, []runnerdriver.Variable{{Key: "FERRY_ROLLBACK", Value: "true"}}
	res := up(a, v1)
	mustSucceed(t, res)
	if !strings.Contains(res.Log, "rolling back from pipeline 92000 to pipeline 91000 (FERRY_ROLLBACK=true)") {
		t.Errorf("no rollback line:\n%s", res.Log)
	}
	want(v1, "91000", "101")

	b.job, b.args = 960001, []string{"--deploy-share=101,202"}
	mustSucceed(t, up(b, v2))
	want(v2, "93000", "202")
}

// TestStackDeployGuard: `docker stack deploy` of one stack: another
// project's deploy is refused before any service changes, FERRY_TAKEOVER
// lets it through; services carry the records.
func TestStackDeployGuard(t *testing.T) {
	r := need(t)
	r.MustDocker("swarm", "init", "--advertise-addr", "127.0.0.1")
	t.Cleanup(func() {
		r.Docker("stack", "rm", "guardstack")
		r.Docker("swarm", "leave", "--force")
	})
	image := r.PushBusybox("guard-stack:1")
	stack := func(replicas int) map[string]string {
		return map[string]string{"docker-stack.yml": fmt.Sprintf(`version: '3.8'
services:
  web:
    image: %s
    command: ["sleep", "3600"]
    deploy:
      replicas: %d
`, image, replicas)}
	}
	deploy := func(g guardRun, replicas int) *runnerdriver.JobResult {
		return runGuarded(t, r, g, stack(replicas), "docker stack deploy --with-registry-auth -c docker-stack.yml guardstack")
	}
	spec := func() string {
		return strings.TrimSpace(r.MustDocker("service", "inspect", "guardstack_web", "--format",
			`{{.Spec.Mode.Replicated.Replicas}} {{index .Spec.Labels "`+deployguard.KeyProjectID+`"}} {{index .Spec.Labels "`+deployguard.KeyPipeline+`"}}`))
	}
	mustSucceed(t, deploy(guardRun{project: "team-a/app", projectID: 101, pipeline: 700, job: 970000}, 1))
	if got := spec(); got != "1 101 700" {
		t.Fatalf("service after project A: %q, want \"1 101 700\"", got)
	}
	mustBeRefused(t, deploy(guardRun{project: "team-b/app", projectID: 202, pipeline: 800, job: 980000}, 2),
		"ferry: stack guardstack belongs to project team-a/app (id 101), not to this project team-b/app (id 202): refusing to take it over")
	if got := spec(); got != "1 101 700" {
		t.Fatalf("the refused deploy changed the service: %q", got)
	}
	res := deploy(guardRun{project: "team-b/app", projectID: 202, pipeline: 800, job: 980001,
		vars: []runnerdriver.Variable{{Key: "FERRY_TAKEOVER", Value: "true"}}}, 2)
	mustSucceed(t, res)
	if got := spec(); got != "2 202 800" {
		t.Fatalf("service after the takeover: %q, want \"2 202 800\"", got)
	}
}
