package jobenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// examplePayload is the runner protocol's example payload (a real runner's
// field order: id and token first), padded with variables to the tens of
// kilobytes real payloads have.
func examplePayload(t testing.TB, nVars int) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "job_response.example.json"))
	if err != nil {
		t.Fatal(err)
	}
	if nVars == 0 {
		return b
	}
	var vars []string
	for i := 0; i < nVars; i++ {
		vars = append(vars, fmt.Sprintf(`{"key":"VAR_%d","value":"value-%d-%s","public":true,"file":false,"masked":false,"raw":false}`, i, i, strings.Repeat("x", 40)))
	}
	s := string(b)
	i := strings.Index(s, `"variables": [`) + len(`"variables": [`)
	return []byte(s[:i] + strings.Join(vars, ",") + "," + s[i:])
}

func writeTemp(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job_response.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReadIdentityMatchesFullDecode: the streaming read gives what a full
// decode gives, for the runner's field order, for other orders (the
// fallback), and for payloads where the fields are missing or malformed.
func TestReadIdentityMatchesFullDecode(t *testing.T) {
	cases := map[string][]byte{
		"example":       examplePayload(t, 0),
		"big":           examplePayload(t, 400),
		"token-last":    []byte(`{"id":9,"variables":[{"key":"CI_JOB_ID","value":"1"}],"git_info":{"repo_url":"https://h/x.git"},"token":"tok-9"}`),
		"nested-id":     []byte(`{"job_info":{"id":1,"token":"nested"},"id":10,"token":"tok-10","git_info":{}}`),
		"no-token":      []byte(`{"id":11,"git_info":{}}`),
		"no-git-info":   []byte(`{"id":12,"token":"tok-12"}`),
		"string-id":     []byte(`{"id":"13","token":"tok-13"}`),
		"syntax-after":  []byte(`{"id":14,"token":"tok-14","git_info":{"repo_url":"x"},`),
		"syntax-before": []byte(`{"id":15,,"token":"tok-15"}`),
		"not-object":    []byte(`[1,2]`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			p := writeTemp(t, b)
			id, token, repo, err := ReadIdentity(p)
			if name == "syntax-after" {
				// The one difference: what follows the identity is not read
				// (prepare's full decode still refuses such a file).
				if err != nil || id != 14 || token != "tok-14" {
					t.Errorf("streaming: %d %q %v", id, token, err)
				}
				return
			}
			jr, ferr := ReadJobResponse(p)
			if (err != nil) != (ferr != nil) {
				t.Fatalf("streaming err %v, full decode err %v", err, ferr)
			}
			if ferr != nil {
				return
			}
			if id != jr.ID || token != jr.Token || repo != jr.GitInfo.RepoURL {
				t.Errorf("streaming %d %q %q, full decode %d %q %q", id, token, repo, jr.ID, jr.Token, jr.GitInfo.RepoURL)
			}
		})
	}
}

func TestIdentityFromPayloadNotVariables(t *testing.T) {
	p := writeTemp(t, examplePayload(t, 0))
	e := FromEnviron([]string{"JOB_RESPONSE_FILE=" + p,
		"CUSTOM_ENV_CI_JOB_ID=701", "CUSTOM_ENV_CI_JOB_TOKEN=glcbt-other", "CUSTOM_ENV_CI_SERVER_URL=https://evil.example.com"})
	id, err := e.Identity("")
	if err != nil {
		t.Fatal(err)
	}
	if id.ID != 702 || id.Token != "glcbt-fakejobtoken0001" || id.ServerURL != "https://gitlab.example.com" || id.ServerFrom != "git_info.repo_url" {
		t.Errorf("identity %+v", id)
	}
	c := e.IdentityConflicts(id)
	if len(c) != 3 || !strings.Contains(c[0], `CI_JOB_ID="701" (payload: 702)`) || strings.Contains(strings.Join(c, " "), "glcbt-other") {
		t.Errorf("conflicts %q", c)
	}
	// The admin's --server-url wins over the payload's clone URL.
	id, _ = e.Identity("https://gitlab.internal/")
	if id.ServerURL != "https://gitlab.internal" || id.ServerFrom != "--server-url" {
		t.Errorf("with --server-url: %+v", id)
	}
	// Agreeing variables are no conflict.
	e = FromEnviron([]string{"JOB_RESPONSE_FILE=" + p, "CUSTOM_ENV_CI_JOB_ID=702", "CUSTOM_ENV_CI_SERVER_URL=https://gitlab.example.com/"})
	id, _ = e.Identity("")
	if c := e.IdentityConflicts(id); len(c) != 0 {
		t.Errorf("conflicts %q", c)
	}
}

func TestIdentityRefusesIncompletePayload(t *testing.T) {
	for _, b := range []string{`{"id":0,"token":"t"}`, `{"id":5}`, `{"token":"t"}`, `{`} {
		e := FromEnviron([]string{"JOB_RESPONSE_FILE=" + writeTemp(t, []byte(b))})
		if _, err := e.Identity(""); err == nil || !strings.Contains(err.Error(), "JOB_RESPONSE_FILE") {
			t.Errorf("%s: %v", b, err)
		}
	}
	if _, err := FromEnviron(nil).Identity(""); err == nil {
		t.Error("no JOB_RESPONSE_FILE: no error")
	}
}

// The cost of learning the job's identity, per stage: the streaming read
// against decoding the whole payload (what `ferry run` would otherwise do).
func BenchmarkReadIdentity(b *testing.B) {
	p := writeTemp(b, examplePayload(b, 400))
	for i := 0; i < b.N; i++ {
		if _, _, _, err := ReadIdentity(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadJobResponse(b *testing.B) {
	p := writeTemp(b, examplePayload(b, 400))
	for i := 0; i < b.N; i++ {
		if _, err := ReadJobResponse(p); err != nil {
			b.Fatal(err)
		}
	}
}

func TestHTTPOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://gitlab.example.com/group/app.git":                        "https://gitlab.example.com",
		"https://gitlab-ci-token:glcbt-x@GitLab.Example.com:8443/g/a.git": "https://gitlab.example.com:8443",
		"http://h":          "http://h",
		"HTTPS://h/x?y#z":   "https://h",
		"file:///repo.git":  "",
		"git@h:group/a.git": "",
		"https://":          "",
		"":                  "",
	} {
		if got := httpOrigin(in); got != want {
			t.Errorf("httpOrigin(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReadProjectIDMatchesFullDecode: the streaming read of
// job_info.project_id gives what a full decode gives, for the runner's
// field order, other orders, a payload without job_info and broken ones.
func TestReadProjectIDMatchesFullDecode(t *testing.T) {
	cases := map[string][]byte{
		"example":          examplePayload(t, 0),
		"big":              examplePayload(t, 400),
		"job-info-last":    []byte(`{"id":9,"token":"t","variables":[{"key":"CI_PROJECT_ID","value":"1"}],"job_info":{"project_id":77}}`),
		"no-job-info":      []byte(`{"id":9,"token":"t","variables":[{"key":"CI_PROJECT_ID","value":"1"}]}`),
		"no-project-id":    []byte(`{"id":9,"job_info":{"name":"x"}}`),
		"string-project":   []byte(`{"id":9,"job_info":{"project_id":"77"}}`),
		"syntax-before":    []byte(`{"id":9,,"job_info":{"project_id":77}}`),
		"syntax-no-jobinf": []byte(`{"id":9,"token":"t",`),
		"not-object":       []byte(`[1,2]`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			p := writeTemp(t, b)
			id, err := ReadProjectID(p)
			jr, ferr := ReadJobResponse(p)
			if (err != nil) != (ferr != nil) {
				t.Fatalf("streaming %d, %v; full decode err %v", id, err, ferr)
			}
			if ferr == nil && id != jr.JobInfo.ProjectID {
				t.Errorf("streaming %d, full decode %d", id, jr.JobInfo.ProjectID)
			}
		})
	}
	if id, err := ReadProjectID(writeTemp(t, examplePayload(t, 0))); err != nil || id <= 0 {
		t.Errorf("the example payload's project id: %d, %v", id, err)
	}
}

// BenchmarkReadProjectID against BenchmarkReadJobResponse: what a stage
// pays to learn the project id from a 40 KB payload.
func BenchmarkReadProjectID(b *testing.B) {
	p := writeTemp(b, examplePayload(b, 400))
	for i := 0; i < b.N; i++ {
		if _, err := ReadProjectID(p); err != nil {
			b.Fatal(err)
		}
	}
}
