package dockerjobs_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// TestPreflightErrors: every error of the point 4 through the
// driver: the job fails in prepare as the user's mistake, before the
// script, with one line naming the variable and the true cause; no secret
// in the log; no holder left.
func TestPreflightErrors(t *testing.T) {
	r := need(t)
	e := newEnv(t)
	other, _ := dockertest.NewKey("")
	enc, _ := dockertest.NewKey("pass-phrase-42")
	_, otherHost := dockertest.NewKey("")
	set := func(vars []runnerdriver.Variable, key, value string) []runnerdriver.Variable {
		out := append([]runnerdriver.Variable(nil), vars...)
		for i := range out {
			if out[i].Key == key {
				out[i].Value = value
				return out
			}
		}
		return append(out, runnerdriver.Variable{Key: key, Value: value, Masked: true})
	}
	ok := ferryVars(r, dockertest.UserOK)
	for _, tc := range []struct {
		name string
		vars []runnerdriver.Variable
		want string
	}{
		{"unknown host key", set(ok, "SSH_KNOWN_HOSTS", "# empty"), "ferry: SSH_KNOWN_HOSTS: unknown host key: [127.0.0.1]:"},
		{"changed host key", set(ok, "SSH_KNOWN_HOSTS", fmt.Sprintf("[127.0.0.1]:%d %s", r.SSHPort, otherHost)), "ferry: SSH_KNOWN_HOSTS: host key CHANGED for [127.0.0.1]:"},
		{"no known hosts", set(ok, "SSH_KNOWN_HOSTS", ""), "ferry: SSH_KNOWN_HOSTS is not set"},
		{"key refused", set(ok, "SSH_PRIVATE_KEY", base64.StdEncoding.EncodeToString(other)), "ferry: SSH_PRIVATE_KEY: key refused by " + dockertest.UserOK + "@127.0.0.1:"},
		{"no docker on the remote PATH", set(ok, "DOCKER_HOST", r.URL(dockertest.UserNoDocker)), "ferry: DOCKER_HOST: no `docker` on the remote PATH of " + dockertest.UserNoDocker},
		{"cannot open the daemon socket", set(ok, "DOCKER_HOST", r.URL(dockertest.UserNoSocket)), "ferry: DOCKER_HOST: " + dockertest.UserNoSocket + "@127.0.0.1:"},
		{"unreachable", set(ok, "DOCKER_HOST", "ssh://"+dockertest.UserOK+"@127.0.0.1:1"), "ferry: DOCKER_HOST: cannot reach 127.0.0.1:1: connection refused"},
		{"bad base64", set(ok, "SSH_PRIVATE_KEY", "bm90IGEga2V5*!"), "ferry: SSH_PRIVATE_KEY is neither a PEM private key nor valid base64"},
		{"not a private key", set(ok, "SSH_PRIVATE_KEY", base64.StdEncoding.EncodeToString([]byte("just some text"))), "ferry: SSH_PRIVATE_KEY decodes from base64, but not to a PEM private key"},
		{"passphrase missing", set(ok, "SSH_PRIVATE_KEY", base64.StdEncoding.EncodeToString(enc)), "ferry: SSH_PRIVATE_KEY is protected by a passphrase, and no passphrase variable is set: set SSH_PRIVATE_KEY_PASSPHRASE"},
		{"no key", set(ok, "SSH_PRIVATE_KEY", ""), "ferry: DOCKER_HOST is " + r.URL(dockertest.UserOK) + " but SSH_PRIVATE_KEY is not set"},
		{"bad DOCKER_HOST", set(ok, "DOCKER_HOST", "ssh://127.0.0.1"), "ferry: DOCKER_HOST: no user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.run(runnerdriver.Job{Name: "deploy", Variables: tc.vars, Script: []string{"echo SCRIPT-RAN"}})
			if res.Status != runnerdriver.StatusFailed || res.FailureReason != runnerdriver.ReasonScriptFailure {
				t.Fatalf("status %s (%s), want a failed job as the user's mistake\n%s", res.Status, res.FailureReason, res.Log)
			}
			if strings.Contains(res.Log, "SCRIPT-RAN") {
				t.Fatalf("the script ran:\n%s", res.Log)
			}
			var line string
			for _, l := range strings.Split(res.Log, "\n") {
				if strings.Contains(l, tc.want) {
					line = l
				}
			}
			if line == "" {
				t.Fatalf("no line with %q:\n%s", tc.want, res.Log)
			}
			t.Logf("%s", line)
			assertNoSecrets(t, secretsOf(r), []*runnerdriver.JobResult{res})
			waitNoHolders(t, e.base, 5e9)
		})
	}
}
