package dockerjobs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// composeFile is seed 000's docker-compose.yml (IMAGE is the placeholder the
// job's sed replaces); the busybox image needs a long-running command.
const composeFile = `version: '3.8'
services:
  web:
    image: IMAGE
    command: ["sleep", "3600"]
    restart: always
`

// seed000DockerJob is seed 000's `docker` job as its author wrote it.
func seed000DockerJob(vars []runnerdriver.Variable, contextUse bool) runnerdriver.Job {
	script := []string{`sed -i -e "s|IMAGE|${IMAGE}|g" docker-compose.yml`}
	if contextUse {
		script = append(script, "docker context use mon-serveur")
	}
	script = append(script, "docker-compose pull", "docker-compose up -d")
	return runnerdriver.Job{
		Name: "docker", Stage: "deploy",
		BeforeScript: []string{"docker login -u gitlab-ci-token -p $CI_JOB_TOKEN $CI_REGISTRY"},
		Script:       script,
		Needs:        []runnerdriver.Need{{Job: "kaniko"}},
		Variables:    vars,
	}
}

func seed000Pipeline(r *dockertest.Remote, image string, docker runnerdriver.Job) runnerdriver.Pipeline {
	return runnerdriver.Pipeline{
		Files: map[string]string{"docker-compose.yml": composeFile},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image", Script: []string{`echo "IMAGE=` + image + `" >> docker.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}},
			docker,
		},
		ProjectVariables: []runnerdriver.Variable{
			{Key: "CI_REGISTRY", Value: r.Registry},
			// The driver's random job token cannot log in to the test
			// registry; this stands in for the one GitLab's registry accepts.
			{Key: "CI_JOB_TOKEN", Value: r.RegPass, Masked: true},
		},
	}
}

func runPipeline(t *testing.T, e *env, p runnerdriver.Pipeline) *runnerdriver.PipelineResult {
	t.Helper()
	ctx, cancel := contextTimeout()
	defer cancel()
	return e.d.RunPipeline(ctx, p)
}

// TestSeed000AsWritten: seed 000's job unchanged, with the context and key
// the admin set up by hand for the runner user. It deploys; its login and
// `docker context use` stay in the job; the runner user's ~/.docker is
// unchanged; the key never enters the job.
func TestSeed000AsWritten(t *testing.T) {
	r := need(t)
	e := newEnv(t)
	dockerDir := handMade(t, e, r)
	before := snapshot(t, dockerDir)

	image := r.PushBusybox("seed000-web:1")
	job := seed000DockerJob(nil, true)
	job.Script = append(job.Script, `test -z "$(grep admin.example.com "$DOCKER_CONFIG/config.json")"`,
		// Inside the job the hand-made context is ferry's socket, not ssh://.
		`docker context inspect mon-serveur --format '{{.Endpoints.docker.Host}}' | grep '^unix://'`)
	pr := runPipeline(t, e, seed000Pipeline(r, image, job))
	mustSucceed(t, pr.Jobs["kaniko"])
	res := pr.Jobs["docker"]
	mustSucceed(t, res)
	t.Cleanup(func() { r.Docker("rm", "-f", "project-web-1", "project_web_1") })

	if ps := r.MustDocker("ps", "--format", "{{.Image}} {{.Status}}"); !strings.Contains(ps, image+" Up") {
		t.Fatalf("the seed's service is not running on the remote engine:\n%s\n%s", ps, res.Log)
	}
	for _, want := range []string{"Login Succeeded", "docker context use mon-serveur", "docker context mon-serveur (" + r.URL(dockertest.UserOK)} {
		if !strings.Contains(res.Log, want) {
			t.Errorf("log lacks %q:\n%s", want, res.Log)
		}
	}
	if after := snapshot(t, dockerDir); after != before {
		t.Fatalf("the runner user's ~/.docker changed:\nbefore %s\nafter  %s", before, after)
	}
	waitNoHolders(t, e.base, 5e9)
	assertNoSecrets(t, append(secretsOf(r, dockertest.TokenUser), "admin-password"), []*runnerdriver.JobResult{res, pr.Jobs["kaniko"]}, e.state, filepath.Join(e.base, "driver", "builds"))
}

// TestSeed000FerryWay: nothing set up by hand; DOCKER_HOST=ssh://,
// SSH_PRIVATE_KEY (base64, masked) and SSH_KNOWN_HOSTS; the preflight line;
// the job runs plain docker and docker-compose (v1).
func TestSeed000FerryWay(t *testing.T) {
	r := need(t)
	e := newEnv(t)
	image := r.PushBusybox("seed000-ferry:1")
	job := seed000DockerJob(ferryVars(r, dockertest.UserOK), false)
	job.Script = append(job.Script, "docker ps --format '{{.Image}}'",
		noKeyFileInReach)
	pr := runPipeline(t, e, seed000Pipeline(r, image, job))
	res := pr.Jobs["docker"]
	mustSucceed(t, res)
	t.Cleanup(func() { r.Docker("rm", "-f", "project-web-1", "project_web_1") })
	version := strings.TrimSpace(r.MustDocker("version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"))
	want := fmt.Sprintf("Docker %s on ssh://%s@127.0.0.1:%d, not a swarm member", version, dockertest.UserOK, r.SSHPort)
	if !strings.Contains(res.Log, want) {
		t.Fatalf("no preflight line %q:\n%s", want, res.Log)
	}
	if ps := r.MustDocker("ps", "--format", "{{.Image}} {{.Status}}"); !strings.Contains(ps, image+" Up") {
		t.Fatalf("not deployed:\n%s", ps)
	}
	waitNoHolders(t, e.base, 5e9)
	assertNoSecrets(t, secretsOf(r, dockertest.TokenUser), []*runnerdriver.JobResult{res}, e.state, filepath.Join(e.base, "driver", "builds"))
}

// TestTwoJobsNoLeaks: job A logs in, creates a context and switches to it;
// job B, next on the same runner, sees neither.
func TestTwoJobsNoLeaks(t *testing.T) {
	r := need(t)
	e := newEnv(t)
	vars := append(ferryVars(r, dockertest.UserOK),
		runnerdriver.Variable{Key: "CI_REGISTRY", Value: r.Registry},
		runnerdriver.Variable{Key: "REG_PASSWORD", Value: r.RegPass, Masked: true})
	a := e.run(runnerdriver.Job{Name: "a", Variables: vars, Script: []string{
		"docker login -u " + r.RegUser + " -p $REG_PASSWORD $CI_REGISTRY",
		"docker context create leak --docker host=unix:///nonexistent.sock",
		"docker context use leak",
		`grep -q '"auths"' "$DOCKER_CONFIG/config.json"`,
		`printf 'A-%s=%s\n' CONFIG "$DOCKER_CONFIG"`,
	}})
	mustSucceed(t, a)
	m := regexp.MustCompile(`(?m)^A-CONFIG=(/\S+)$`).FindStringSubmatch(a.Log)
	if m == nil {
		t.Fatalf("job A did not print its DOCKER_CONFIG:\n%s", a.Log)
	}
	aDir := m[1]
	b := e.run(runnerdriver.Job{Name: "b", Variables: vars, Script: []string{
		"docker context ls",
		`test "$(docker context show)" = default`,
		`! grep -q '"auths"' "$DOCKER_CONFIG/config.json"`,
		`! docker context inspect leak`,
		`test "$DOCKER_CONFIG" != "` + aDir + `"`,
		`docker ps`,
	}})
	mustSucceed(t, b)
	if _, err := os.Stat(aDir); !os.IsNotExist(err) {
		t.Fatalf("job A's DOCKER_CONFIG %s survived its cleanup: %v", aDir, err)
	}
	if _, err := os.Stat(filepath.Join(e.home, ".docker", "config.json")); !os.IsNotExist(err) {
		t.Fatalf("the runner user's ~/.docker/config.json was created: %v", err)
	}
	assertNoSecrets(t, secretsOf(r, r.RegUser), []*runnerdriver.JobResult{a, b}, e.state, filepath.Join(e.base, "driver", "builds"))
}

// handMade sets the runner user up as seed 000's admin did by hand: its
// SSH key and known_hosts in ~/.ssh, a context mon-serveur with
// host=ssh://..., and an admin login in ~/.docker/config.json (never a
// job's). Returns ~/.docker.
func handMade(t *testing.T, e *env, r *dockertest.Remote) string {
	t.Helper()
	dockerDir := filepath.Join(e.home, ".docker")
	sshDir := filepath.Join(e.home, ".ssh")
	os.MkdirAll(sshDir, 0o700)
	os.WriteFile(filepath.Join(sshDir, "id_ed25519"), r.Key, 0o600)
	os.WriteFile(filepath.Join(sshDir, "known_hosts"), []byte(r.KnownHosts+"\n"), 0o600)
	create := exec.Command("docker", "context", "create", "mon-serveur", "--docker", "host="+r.URL(dockertest.UserOK))
	create.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerDir)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	os.WriteFile(filepath.Join(dockerDir, "config.json"), []byte(adminAuth), 0o600)
	return dockerDir
}

// adminAuth is the runner user's own login (admin:admin-password).
const adminAuth = `{"auths":{"admin.example.com":{"auth":"YWRtaW46YWRtaW4tcGFzc3dvcmQ="}}}`

// snapshot is every file under dir with its content.
func snapshot(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		switch {
		case err != nil || info.IsDir():
		case info.Mode()&os.ModeSymlink != 0: // an installed CLI plugin, say: not its 100 MB
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, "%s->%s;", strings.TrimPrefix(p, dir), l)
		default:
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s=%s;", strings.TrimPrefix(p, dir), c)
		}
		return nil
	})
	return b.String()
}

// noKeyFileInReach is a job script line that fails when a file holding a
// private key lies in ferry's state dir or the build dirs, where the job can
// read it. The runner's own temp dir (custom-executor*) is left out: it
// holds the job's payload, its own variables included, by the runner's
// design; under a private /tmp it is bound back inside the job's /tmp,
// which is its TMPDIR in ferry's state dir, so grep meets it there too.
const noKeyFileInReach = `! grep -rl --exclude-dir='custom-executor*' "PRIVATE KEY-----" "$FERRY_STATE_DIR" "$CI_PROJECT_DIR" "$CI_PROJECT_DIR.tmp" 2>/dev/null`
