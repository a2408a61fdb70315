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

// sshClientEnv is the docker CLI's own ssh:// set up as a careful admin
// would for one job: an `ssh` first on PATH that adds -F <config> with the
// key and known_hosts (OpenSSH reads ~/.ssh from the passwd entry, so HOME
// cannot isolate it). Returns the environment for docker/docker-compose.
func sshClientEnv(t testing.TB, r *dockertest.Remote, dir string) []string {
	key := filepath.Join(dir, "id_ed25519")
	kh := filepath.Join(dir, "known_hosts")
	cfg := filepath.Join(dir, "ssh_config")
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o700)
	os.WriteFile(key, r.Key, 0o600)
	os.WriteFile(kh, []byte(r.KnownHosts+"\n"), 0o600)
	os.WriteFile(cfg, []byte(fmt.Sprintf("Host *\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  BatchMode yes\n", key, kh)), 0o600)
	os.WriteFile(filepath.Join(bin, "ssh"), []byte("#!/bin/sh\nexec /usr/bin/ssh -F "+cfg+" \"$@\"\n"), 0o755)
	os.MkdirAll(filepath.Join(dir, "docker-config"), 0o700)
	return []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, "docker-config"),
		"DOCKER_HOST=" + r.URL(dockertest.UserOK)}
}

// diffScript is one sequence of docker commands, each line reporting its
// exit code and (for some) its output: success, failures from the daemon,
// a pull needing a login, exec, inspect of a missing object.
func diffScript(r *dockertest.Remote, image, name string) []string {
	return []string{
		// The job's stage script runs under errexit: a failing command is a
		// result here, not the end of the sequence.
		`set +e`,
		`run() { out=$("$@" 2>/dev/null); rc=$?; echo "rc=$rc $1 $2 | $(echo $out)"; }`,
		// Only the exit code where the output names a random id or progress.
		`rc() { "$@" > /dev/null 2>&1; echo "rc=$? $1 $2"; }`,
		`rc docker pull ` + image,
		`run docker login -u ` + r.RegUser + ` -p "$REG_PASSWORD" ` + r.Registry,
		`run docker pull -q ` + image,
		`rc docker run -d --name ` + name + ` --label diff=1 ` + image + ` sleep 300`,
		`run docker exec ` + name + ` echo hi-from-exec`,
		`run docker inspect --format '{{.State.Running}} {{.Config.Image}}' ` + name,
		`run docker inspect no-such-container-ferry`,
		`run docker pull ` + r.Registry + `/no-such-image:1`,
		`run docker run --rm ` + image + ` sh -c 'exit 3'`,
		`run docker ps --filter label=diff=1 --format '{{.Names}} {{.Image}}'`,
		`run docker rm -f ` + name,
		`run docker rmi ` + image,
		`run docker image inspect ` + image,
	}
}

var rcLine = regexp.MustCompile(`(?m)^rc=.*$`)

// TestDifferentialSSHvsFerry runs the same docker commands through the
// docker CLI's own ssh:// and through ferry's socket (in a job, through the
// driver) and compares every exit code, the outputs that name no object id,
// and the resulting state of the engine.
func TestDifferentialSSHvsFerry(t *testing.T) {
	r := need(t)
	image := r.PushBusybox("diff:1")
	name := "ferry-diff"
	state := func() string {
		return r.MustDocker("ps", "-a", "--filter", "label=diff=1", "--format", "{{.Names}} {{.Image}} {{.Status}}") +
			r.MustDocker("images", "--format", "{{.Repository}}:{{.Tag}}", image)
	}

	dir := t.TempDir()
	script := strings.Join(diffScript(r, image, name), "\n")
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(sshClientEnv(t, r, dir), "REG_PASSWORD="+r.RegPass)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh:// run: %v\n%s", err, out)
	}
	viaSSH := rcLine.FindAllString(string(out), -1)
	stateSSH := state()

	e := newEnv(t)
	res := e.run(runnerdriver.Job{Name: "diff", Variables: append(ferryVars(r, dockertest.UserOK),
		runnerdriver.Variable{Key: "REG_PASSWORD", Value: r.RegPass, Masked: true}), Script: []string{script}})
	mustSucceed(t, res)
	viaFerry := rcLine.FindAllString(strings.ReplaceAll(res.Log, "\r", ""), -1)
	stateFerry := state()

	if len(viaSSH) != len(diffScript(r, image, name))-3 {
		t.Fatalf("ssh:// run printed %d results:\n%s", len(viaSSH), out)
	}
	if strings.Join(viaSSH, "\n") != strings.Join(viaFerry, "\n") {
		t.Fatalf("results differ\nssh://:\n%s\nferry:\n%s", strings.Join(viaSSH, "\n"), strings.Join(viaFerry, "\n"))
	}
	if stateSSH != stateFerry {
		t.Fatalf("engine state differs\nssh://: %q\nferry: %q", stateSSH, stateFerry)
	}
	t.Logf("same %d results both ways:\n%s", len(viaSSH), strings.Join(viaSSH, "\n"))
}
