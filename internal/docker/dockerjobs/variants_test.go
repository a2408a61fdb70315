package dockerjobs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// TestFerryWayFileVariableWithPassphrase: the key as a File variable (the
// PEM), encrypted, with SSH_PRIVATE_KEY_PASSPHRASE; the passphrase is masked
// and the runner's copy of the File variable is gone after the job.
func TestFerryWayFileVariableWithPassphrase(t *testing.T) {
	r := need(t)
	pass := "pass-Phrase-" + r.RegPass[len(r.RegPass)-6:]
	enc, auth := dockertest.NewKey(pass)
	// Authorize the encrypted key's public half for the test user.
	keys := filepath.Join(r.Dir, "keys", dockertest.UserOK)
	old, _ := os.ReadFile(keys)
	os.WriteFile(keys, append(old, []byte(auth+"\n")...), 0o644)
	t.Cleanup(func() { os.WriteFile(keys, old, 0o644) })

	e := newEnv(t)
	res := e.run(runnerdriver.Job{Name: "file-var", Variables: []runnerdriver.Variable{
		{Key: "DOCKER_HOST", Value: r.URL(dockertest.UserOK)},
		{Key: "SSH_PRIVATE_KEY", Value: string(enc), File: true},
		{Key: "SSH_PRIVATE_KEY_PASSPHRASE", Value: pass, Masked: true},
		{Key: "SSH_KNOWN_HOSTS", Value: r.KnownHosts, File: true},
	}, Script: []string{"docker version --format '{{.Server.APIVersion}}'", "echo passphrase=$SSH_PRIVATE_KEY_PASSPHRASE"}})
	mustSucceed(t, res)
	if !strings.Contains(res.Log, "Docker ") || strings.Contains(res.Log, pass) {
		t.Fatalf("no preflight, or the passphrase in the log:\n%s", res.Log)
	}
	if _, err := os.Stat(res.ProjectDir + ".tmp/SSH_PRIVATE_KEY"); !os.IsNotExist(err) {
		t.Fatalf("the File variable's key file is left in the build dir: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(enc)), "\n") {
		if !strings.HasPrefix(l, "-----") {
			lines = append(lines, l)
		}
	}
	assertNoSecrets(t, append(lines, pass), []*runnerdriver.JobResult{res}, e.state, filepath.Join(e.base, "driver", "builds"))
}

// TestTrustOnFirstUse: only with --docker-allow-tofu does a job without
// SSH_KNOWN_HOSTS connect, and the log names the key it trusted.
func TestTrustOnFirstUse(t *testing.T) {
	r := need(t)
	vars := ferryVars(r, dockertest.UserOK)[:2] // no SSH_KNOWN_HOSTS
	e := newEnv(t, "--docker-allow-tofu")
	res := e.run(runnerdriver.Job{Name: "tofu", Variables: vars, Script: []string{"docker ps"}})
	mustSucceed(t, res)
	if !strings.Contains(res.Log, "trusted on first use") || !strings.Contains(res.Log, "SSH_KNOWN_HOSTS is not set: trusting") {
		t.Fatalf("no TOFU lines:\n%s", res.Log)
	}
}

// TestPrepareInTheEngine: with Kubernetes credentials on (the default),
// prepare runs in ferry's engine; the holder it starts is the engine binary
// and serves the job the same way.
func TestPrepareInTheEngine(t *testing.T) {
	r := need(t)
	e := newEnv(t, "--kube-sources=kubeconfig,cluster-vars")
	res := e.run(runnerdriver.Job{Name: "engine", Variables: ferryVars(r, dockertest.UserOK), Script: []string{"docker ps"}})
	mustSucceed(t, res)
	if !strings.Contains(res.Log, "on "+r.URL(dockertest.UserOK)) {
		t.Fatalf("no preflight line:\n%s", res.Log)
	}
	waitNoHolders(t, e.base, 5e9)
}
