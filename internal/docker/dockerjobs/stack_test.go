package dockerjobs_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// TestSeed002StackDeploy: seed 002's swarm stack from a private registry on
// a single-node swarm (this kernel has no IPVS: a host-mode port), deployed
// through ferry; then the guards: a deploy without --with-registry-auth
// warns in the job log, a CI_JOB_TOKEN login handed to the swarm gets a note.
func TestSeed002StackDeploy(t *testing.T) {
	r := need(t)
	r.MustDocker("swarm", "init", "--advertise-addr", "127.0.0.1")
	t.Cleanup(func() {
		r.Docker("stack", "rm", "gogs")
		r.Docker("swarm", "leave", "--force")
	})
	image := r.PushBusybox("seed002-gogs:1")
	stack := fmt.Sprintf(`version: '3.8'
services:
  web:
    image: %s
    command: ["sleep", "3600"]
    ports:
      - target: 3000
        published: 13000
        mode: host
    deploy:
      replicas: 1
`, image)
	e := newEnv(t)
	vars := append(ferryVars(r, dockertest.UserOK),
		runnerdriver.Variable{Key: "CI_REGISTRY", Value: r.Registry},
		runnerdriver.Variable{Key: "REG_USER", Value: r.RegUser},
		runnerdriver.Variable{Key: "REG_PASSWORD", Value: r.RegPass, Masked: true})
	files := map[string]string{"docker-stack.yml": stack}

	deploy := e.run(runnerdriver.Job{Name: "deploy", Variables: vars, Files: files, Script: []string{
		"docker login -u $REG_USER -p $REG_PASSWORD $CI_REGISTRY",
		"docker stack deploy --with-registry-auth -c docker-stack.yml gogs",
	}})
	mustSucceed(t, deploy)
	if !strings.Contains(deploy.Log, "swarm manager") {
		t.Fatalf("preflight does not say swarm manager:\n%s", deploy.Log)
	}
	if strings.Contains(deploy.Log, "ferry: warning") {
		t.Fatalf("warning for a deploy with --with-registry-auth:\n%s", deploy.Log)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := r.Docker("service", "ps", "gogs_web", "--format", "{{.CurrentState}} {{.Error}}")
		if strings.HasPrefix(out, "Running") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stack's task does not run: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	noAuth := e.run(runnerdriver.Job{Name: "deploy-no-auth", Variables: vars, Files: files, Script: []string{
		"docker login -u $REG_USER -p $REG_PASSWORD $CI_REGISTRY",
		"docker stack deploy -c docker-stack.yml gogs",
	}})
	mustSucceed(t, noAuth)
	want := "ferry: warning: service gogs_web uses " + image + " from " + r.Registry + ", which this job logged in to, but the deploy sends no credentials"
	if !strings.Contains(noAuth.Log, want) {
		t.Fatalf("no guard warning %q:\n%s", want, noAuth.Log)
	}
	// Inline: the docker CLI prints the daemon response's Warnings, so the
	// warning sits under the deploy command, inside the script's section.
	end := regexp.MustCompile(`section_end:[0-9]+:step_script`).FindStringIndex(noAuth.Log)
	if w := strings.Index(noAuth.Log, want); end == nil || w > end[0] {
		t.Errorf("the warning is not under the command, inside the script's section:\n%s", noAuth.Log)
	}
	if strings.Count(noAuth.Log, want) != 1 {
		t.Errorf("the warning is printed %d times:\n%s", strings.Count(noAuth.Log, want), noAuth.Log)
	}

	token := e.run(runnerdriver.Job{Name: "deploy-job-token", Variables: append(vars,
		runnerdriver.Variable{Key: "CI_JOB_TOKEN", Value: r.RegPass, Masked: true}), Files: files, Script: []string{
		"docker login -u gitlab-ci-token -p $CI_JOB_TOKEN $CI_REGISTRY",
		"docker stack deploy --with-registry-auth -c docker-stack.yml gogs",
	}})
	mustSucceed(t, token)
	if !strings.Contains(token.Log, "ferry: note: service gogs_web gets this job's CI_JOB_TOKEN") {
		t.Fatalf("no CI_JOB_TOKEN note:\n%s", token.Log)
	}
	assertNoSecrets(t, secretsOf(r, r.RegUser, dockertest.TokenUser), []*runnerdriver.JobResult{deploy, noAuth, token}, e.state)
}
