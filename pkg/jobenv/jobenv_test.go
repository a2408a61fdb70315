package jobenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFromEnviron(t *testing.T) {
	e := FromEnviron([]string{
		"CUSTOM_ENV_CI_JOB_ID=5", "CUSTOM_ENV_X=a=b", "CUSTOM_ENV_=bad",
		"BUILD_FAILURE_EXIT_CODE=1", "SYSTEM_FAILURE_EXIT_CODE=2",
		"BUILD_EXIT_CODE_FILE=/tmp/x", "JOB_RESPONSE_FILE=/tmp/jr", "HOME=/h",
	})
	if v, _ := e.JobVar("X"); v != "a=b" {
		t.Errorf("X=%q", v)
	}
	if len(e.JobVars()) != 2 || e.BuildFailureExitCode != 1 || e.SystemFailureExitCode != 2 ||
		e.BuildExitCodeFile != "/tmp/x" || e.Getenv("HOME") != "/h" {
		t.Errorf("%+v", e)
	}
	if err := e.RequireRunner(); err != nil {
		t.Error(err)
	}
}

func TestRequireRunnerNamesMissing(t *testing.T) {
	e := FromEnviron([]string{"BUILD_FAILURE_EXIT_CODE=abc", "JOB_RESPONSE_FILE=/x"})
	err := e.RequireRunner()
	if err == nil {
		t.Fatal("no error")
	}
	for _, n := range []string{"BUILD_FAILURE_EXIT_CODE", "SYSTEM_FAILURE_EXIT_CODE"} {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("%v does not name %s", err, n)
		}
	}
	if strings.Contains(err.Error(), "JOB_RESPONSE_FILE") {
		t.Errorf("names a present variable: %v", err)
	}
}

func TestPayload(t *testing.T) {
	p := filepath.Join(t.TempDir(), "jr.json")
	os.WriteFile(p, []byte(`{"id":7,"runner_info":{"timeout":600},"variables":[{"key":"T","value":"secret-1","masked":true},{"key":"T","value":"secret-2","masked":true}],"steps":[{"name":"script","script":["echo"]}]}`), 0o600)
	jr, err := FromEnviron([]string{"JOB_RESPONSE_FILE=" + p}).Payload()
	if err != nil {
		t.Fatal(err)
	}
	if jr.ID != 7 || jr.RunnerInfo.Timeout != 600 || len(jr.MaskedValues()) != 2 || jr.Steps[0].Script[0] != "echo" {
		t.Errorf("%+v", jr)
	}
	if v, _ := jr.Variable("T"); v.Value != "secret-2" {
		t.Errorf("last one should win: %v", v)
	}
	os.WriteFile(p, []byte(`{`), 0o600)
	if _, err := ReadJobResponse(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("bad JSON: %v", err)
	}
}
