package jobenv

import (
	"strconv"
	"testing"
)

// Payloads of runners 18.7 to 19.3 (shared runner-protocol facts, "18.7 to
// 19.3 in detail"): `inputs`, `run` as an array of step objects (a string
// before 18.9, left out when empty), job_info.pipeline_id, features.tracing
// as an object or null, suspend_options, services[].variables. ferry keeps
// decoding them: unknown fields are skipped, and the fields it reads keep
// their types. Keys named id and token inside the new objects must not be
// taken for the job's.
func TestPayload19Fields(t *testing.T) {
	cases := map[string]string{
		"19.3": `{"id":501,"token":"tok-501","allow_git_fetch":true,
 "job_info":{"name":"deploy","stage":"deploy","project_id":42,"project_name":"p","pipeline_id":9001},
 "git_info":{"repo_url":"https://h/g/p.git","ref":"main","sha":"abc","before_sha":"000","ref_type":"branch"},
 "runner_info":{"timeout":3600},
 "variables":[{"key":"CI_JOB_ID","value":"501","public":true},{"key":"SECRET","value":"s3cr3t-v","masked":true}],
 "steps":[{"name":"script","script":["echo hi"],"timeout":3600,"when":"on_success","allow_failure":false}],
 "services":[{"name":"postgres:16","alias":"db","variables":[{"key":"token","value":"svc-tok"},{"key":"id","value":"7"}]}],
 "features":{"trace_sections":true,"tracing":{"endpoint":"https://otel","id":77,"token":"trace-tok"}},
 "suspend_options":{},
 "inputs":{"id":1,"token":"input-tok","env":"prod"},
 "run":[{"name":"hello","id":3,"token":"step-tok","script":"echo hi"}],
 "policy_options":{"execution_policy_job":false}}`,
		"tracing-null":  `{"id":502,"token":"tok-502","features":{"tracing":null},"suspend_options":{},"inputs":{},"git_info":{}}`,
		"new-before-id": `{"inputs":{"id":1,"token":"x"},"run":[{"id":2}],"features":{"tracing":{"token":"t"}},"id":503,"token":"tok-503","git_info":{}}`,
		"run-string":    `{"id":504,"token":"tok-504","run":"[{\"name\":\"old\"}]","git_info":{}}`,
		"unknown-types": `{"id":505,"token":"tok-505","inputs":[1,2],"suspend_options":null,"services":[{"name":"x","variables":null}],"git_info":{}}`,
	}
	want := map[string]int64{"19.3": 501, "tracing-null": 502, "new-before-id": 503, "run-string": 504, "unknown-types": 505}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			p := writeTemp(t, []byte(b))
			jr, err := ReadJobResponse(p)
			if err != nil {
				t.Fatalf("full decode: %v", err)
			}
			id, token, _, err := ReadIdentity(p)
			if err != nil || id != want[name] || jr.ID != want[name] || token != jr.Token || token != "tok-"+strconv.FormatInt(want[name], 10) {
				t.Errorf("identity %d %q %v, full %d %q", id, token, err, jr.ID, jr.Token)
			}
			if name == "19.3" {
				if jr.JobInfo.ProjectID != 42 || jr.GitInfo.RepoURL != "https://h/g/p.git" || len(jr.Steps) != 1 || jr.RunnerInfo.Timeout != 3600 {
					t.Errorf("decoded %+v", jr)
				}
				if m := jr.MaskedValues(); len(m) != 1 || m[0] != "s3cr3t-v" {
					t.Errorf("masked values %v", m)
				}
			}
		})
	}
}
