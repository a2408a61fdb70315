package dockerjobs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// The `docker compose` v2 plugin is installed where admins usually put it:
// the runner user's ~/.docker/cli-plugins. Each job gets its own
// DOCKER_CONFIG, so these tests also prove that the runner's plugins are
// still found there (cliPluginsExtraDirs) and, under the sandbox, may be
// run while the rest of ~/.docker stays hidden.

// composeV2 is job with `docker compose` (v2) where seed 000 runs
// docker-compose (v1), and the plugin's version printed first.
func composeV2(job runnerdriver.Job) runnerdriver.Job {
	script := []string{"docker compose version"}
	for _, l := range job.Script {
		script = append(script, strings.Replace(l, "docker-compose ", "docker compose ", 1))
	}
	job.Script = script
	return job
}

var sandboxLine = regexp.MustCompile(`Sandbox: [^\n]*`)

var composeV2Version = regexp.MustCompile(`(?m)^Docker Compose version v2\.\d+\.\d+`)

// runnerConfigHidden is a script line printing whether the job can read the
// runner user's ~/.docker/config.json (the marker is computed by the shell:
// the log echoes each command line). The job's $HOME is its project's home
// (docs/home.md), so the runner user's is named.
func runnerConfigHidden(runnerHome string) string {
	return `echo "runner-docker-config-readable=$(cat "` + runnerHome + `/.docker/config.json" >/dev/null 2>&1 && echo yes || echo no)"`
}

// checkV2Job asserts what both seed 000 v2 tests expect of the job's log.
func checkV2Job(t *testing.T, r *dockertest.Remote, res *runnerdriver.JobResult, image string) {
	t.Helper()
	if !composeV2Version.MatchString(res.Log) {
		t.Fatalf("no `docker compose` v2 version in the log:\n%s", res.Log)
	}
	for _, want := range []string{"docker compose pull", "docker compose up -d"} {
		if !strings.Contains(res.Log, want) {
			t.Fatalf("log lacks %q:\n%s", want, res.Log)
		}
	}
	if ps := r.MustDocker("ps", "--format", "{{.Image}} {{.Names}} {{.Status}}"); !strings.Contains(ps, image+" project-web-1 Up") {
		t.Fatalf("the seed's service is not running on the remote engine (v2 names it project-web-1):\n%s\n%s", ps, res.Log)
	}
	if sb := sandboxLine.FindString(res.Log); strings.HasPrefix(sb, "Sandbox: on") {
		if !strings.Contains(res.Log, "runner-docker-config-readable=no") {
			t.Fatalf("under the sandbox the job read the runner user's ~/.docker/config.json:\n%s", res.Log)
		}
	} else {
		t.Logf("the job ran without the sandbox (%q): the plugin's readability under it is not checked here", sb)
	}
}

// TestSeed000ComposeV2FerryWay: seed 000's job with `docker compose pull`
// and `docker compose up -d` (v2), the ferry way (DOCKER_HOST=ssh://,
// SSH_PRIVATE_KEY, SSH_KNOWN_HOSTS): it deploys through ferry's socket.
func TestSeed000ComposeV2FerryWay(t *testing.T) {
	r := need(t)
	plugin := dockertest.ComposeV2(t)
	e := newEnv(t)
	dockerDir := filepath.Join(e.home, ".docker")
	dockertest.InstallPlugin(t, dockerDir, plugin)
	os.WriteFile(filepath.Join(dockerDir, "config.json"), []byte(adminAuth), 0o600)
	before := snapshot(t, dockerDir)

	image := r.PushBusybox("seed000-v2:1")
	job := composeV2(seed000DockerJob(ferryVars(r, dockertest.UserOK), false))
	job.Script = append(job.Script, runnerConfigHidden(e.home),
		"docker compose ps --format '{{.Service}} {{.State}}'",
		noKeyFileInReach)
	pr := runPipeline(t, e, seed000Pipeline(r, image, job))
	mustSucceed(t, pr.Jobs["kaniko"])
	res := pr.Jobs["docker"]
	t.Cleanup(func() { r.Docker("rm", "-f", "project-web-1") })
	mustSucceed(t, res)
	checkV2Job(t, r, res, image)
	if !strings.Contains(res.Log, "on ssh://"+dockertest.UserOK+"@127.0.0.1:") {
		t.Fatalf("no preflight line:\n%s", res.Log)
	}
	if after := snapshot(t, dockerDir); after != before {
		t.Fatalf("the runner user's ~/.docker changed:\nbefore %s\nafter  %s", before, after)
	}
	waitNoHolders(t, e.base, 5e9)
	assertNoSecrets(t, append(secretsOf(r, dockertest.TokenUser), "YWRtaW46YWRtaW4tcGFzc3dvcmQ="), []*runnerdriver.JobResult{res, pr.Jobs["kaniko"]},
		e.state, filepath.Join(e.base, "driver", "builds"))
}

// TestSeed000ComposeV2AsWritten: seed 000's job with `docker context use
// mon-serveur` and `docker compose` (v2), on the context and key the admin
// set up by hand: v2 reaches the engine through the context rewritten to
// ferry's socket; the runner user's ~/.docker is unchanged.
func TestSeed000ComposeV2AsWritten(t *testing.T) {
	r := need(t)
	plugin := dockertest.ComposeV2(t)
	e := newEnv(t)
	dockerDir := handMade(t, e, r)
	dockertest.InstallPlugin(t, dockerDir, plugin)
	before := snapshot(t, dockerDir)

	image := r.PushBusybox("seed000-v2-ctx:1")
	job := composeV2(seed000DockerJob(nil, true))
	job.Script = append(job.Script, runnerConfigHidden(e.home),
		`docker context inspect mon-serveur --format '{{.Endpoints.docker.Host}}' | grep '^unix://'`)
	pr := runPipeline(t, e, seed000Pipeline(r, image, job))
	mustSucceed(t, pr.Jobs["kaniko"])
	res := pr.Jobs["docker"]
	t.Cleanup(func() { r.Docker("rm", "-f", "project-web-1") })
	mustSucceed(t, res)
	checkV2Job(t, r, res, image)
	if after := snapshot(t, dockerDir); after != before {
		t.Fatalf("the runner user's ~/.docker changed:\nbefore %s\nafter  %s", before, after)
	}
	waitNoHolders(t, e.base, 5e9)
	assertNoSecrets(t, append(secretsOf(r, dockertest.TokenUser), "admin-password", "YWRtaW46YWRtaW4tcGFzc3dvcmQ="),
		[]*runnerdriver.JobResult{res, pr.Jobs["kaniko"]}, e.state, filepath.Join(e.base, "driver", "builds"))
}

// composeV2DiffScript is one sequence of `docker compose` (v2) commands:
// a pull refused without a login, pull, up, ps, exec (exit codes passed
// through), an idempotent up, logs, down, and a missing compose file.
func composeV2DiffScript(r *dockertest.Remote, image string) []string {
	return []string{
		`set +e`,
		`run() { out=$("$@" 2>/dev/null); rc=$?; echo "rc=$rc $3 $4 | $(echo $out)"; }`,
		`rc() { "$@" > /dev/null 2>&1; echo "rc=$? $3 $4"; }`,
		`mkdir -p v2diff && cd v2diff`,
		`printf 'services:\n  web:\n    image: %s\n    command: ["sleep", "300"]\n    labels: [diffv2=1]\n' ` + image + ` > compose.yml`,
		`run docker compose config --services`,
		`rc docker compose pull -q`,
		`run docker login -u ` + r.RegUser + ` -p "$REG_PASSWORD" ` + r.Registry,
		`rc docker compose pull -q`,
		`rc docker compose up -d`,
		`run docker compose ps --format '{{.Service}} {{.State}}'`,
		`run docker compose exec -T web echo hi-from-compose-exec`,
		`run docker compose exec -T web sh -c 'exit 4'`,
		`rc docker compose up -d`,
		`run docker compose logs --no-color web`,
		`run docker compose ps -q --status exited`,
		`rc docker compose down`,
		`run docker compose ps -a --format '{{.Service}}'`,
		`run docker compose -f missing.yml up -d`,
	}
}

// TestDifferentialComposeV2 runs the same `docker compose` (v2) commands
// through the docker CLI's own ssh:// and through ferry's socket (a job,
// through the driver) and compares every exit code, the outputs, and the
// engine's state after each run.
func TestDifferentialComposeV2(t *testing.T) {
	r := need(t)
	plugin := dockertest.ComposeV2(t)
	image := r.PushBusybox("diffv2:1")
	state := func() string {
		return r.MustDocker("ps", "-a", "--filter", "label=diffv2=1", "--format", "{{.Names}} {{.Image}} {{.Status}}") +
			r.MustDocker("network", "ls", "--filter", "name=v2diff", "--format", "{{.Name}}")
	}
	script := strings.Join(composeV2DiffScript(r, image), "\n")
	steps := len(composeV2DiffScript(r, image)) - 5

	dir := t.TempDir()
	env := append(sshClientEnv(t, r, dir), "REG_PASSWORD="+r.RegPass)
	dockertest.InstallPlugin(t, filepath.Join(dir, "docker-config"), plugin)
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh:// run: %v\n%s", err, out)
	}
	viaSSH := rcLine.FindAllString(string(out), -1)
	stateSSH := state()
	if len(viaSSH) != steps {
		t.Fatalf("ssh:// run printed %d results, want %d:\n%s", len(viaSSH), steps, out)
	}

	e := newEnv(t)
	dockertest.InstallPlugin(t, filepath.Join(e.home, ".docker"), plugin)
	res := e.run(runnerdriver.Job{Name: "diffv2", Variables: append(ferryVars(r, dockertest.UserOK),
		runnerdriver.Variable{Key: "REG_PASSWORD", Value: r.RegPass, Masked: true}), Script: []string{script}})
	mustSucceed(t, res)
	viaFerry := rcLine.FindAllString(strings.ReplaceAll(res.Log, "\r", ""), -1)
	stateFerry := state()

	if strings.Join(viaSSH, "\n") != strings.Join(viaFerry, "\n") {
		t.Fatalf("results differ\nssh://:\n%s\nferry:\n%s", strings.Join(viaSSH, "\n"), strings.Join(viaFerry, "\n"))
	}
	if stateSSH != stateFerry {
		t.Fatalf("engine state differs\nssh://: %q\nferry: %q", stateSSH, stateFerry)
	}
	// The sequence must have done something both ways: a deploy that
	// failed identically would compare equal too.
	for _, want := range []string{"rc=0 up -d", "rc=0 ps --format | web running", "rc=0 exec -T | hi-from-compose-exec", "rc=4 exec -T", "rc=0 down"} {
		if !strings.Contains(strings.Join(viaFerry, "\n"), want) {
			t.Fatalf("no %q in the results:\n%s", want, strings.Join(viaFerry, "\n"))
		}
	}
	assertNoSecrets(t, secretsOf(r, r.RegUser), []*runnerdriver.JobResult{res}, e.state, filepath.Join(e.base, "driver", "builds"))
	t.Logf("same %d results both ways:\n%s", len(viaSSH), strings.Join(viaSSH, "\n"))
}
