package deployguard

import (
	"errors"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func guard(t *testing.T, extra map[string]string) *Guard {
	t.Helper()
	m := map[string]string{
		EnvInstance: "https://gitlab.example.com", EnvProjectID: "42", "CI_PROJECT_PATH": "team-a/app",
		EnvPipeline: "100", EnvJob: "500",
		// The job's own CI_* values lose to ferry's.
		"CI_PROJECT_ID": "7", "CI_PIPELINE_ID": "999999",
	}
	for k, v := range extra {
		m[k] = v
	}
	g, err := FromEnv(env(m))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func rec(project, path, pipeline, job string) map[string]string {
	return map[string]string{KeyInstance: "https://gitlab.example.com", KeyProjectID: project, KeyProject: path, KeyPipeline: pipeline, KeyJob: job}
}

func TestFromEnvPrefersFerrysValues(t *testing.T) {
	g := guard(t, nil)
	if g.ID.ProjectID != 42 || g.ID.PipelineID != 100 || g.ID.JobID != 500 || !g.Active() {
		t.Fatalf("identity %+v", g.ID)
	}
	g, _ = FromEnv(env(map[string]string{"CI_SERVER_URL": "https://x/", "CI_PROJECT_ID": "3", "CI_PIPELINE_ID": "9"}))
	if g.ID.Instance != "https://x" || g.ID.ProjectID != 3 || g.ID.PipelineID != 9 {
		t.Fatalf("fallback identity %+v", g.ID)
	}
	if _, err := FromEnv(env(map[string]string{EnvRollback: "maybe"})); err == nil || !strings.Contains(err.Error(), "FERRY_ROLLBACK") {
		t.Fatalf("bad FERRY_ROLLBACK: %v", err)
	}
}

func TestCheck(t *testing.T) {
	var ref *Refusal
	cases := []struct {
		name   string
		extra  map[string]string
		rec    map[string]string
		refuse string // substring of the refusal, "" = allowed
		note   string
	}{
		{"never recorded", nil, map[string]string{"app": "x"}, "", ""},
		{"nil", nil, nil, "", ""},
		{"same pipeline", nil, rec("42", "team-a/app", "100", "500"), "", ""},
		{"newer pipeline", nil, rec("42", "team-a/app", "90", "400"), "", ""},
		{"older pipeline", nil, rec("42", "team-a/app", "101", "501"), "deployed by pipeline 101 of team-a/app (id 42), newer than this pipeline 100", ""},
		{"older, rollback var", map[string]string{EnvRollback: "true"}, rec("42", "team-a/app", "101", "501"), "", "rolling back from pipeline 101 to pipeline 100 (FERRY_ROLLBACK=true)"},
		{"older, retried job", nil, rec("42", "team-a/app", "101", "499"), "", "is a retry"},
		{"other instance", nil, map[string]string{KeyInstance: "https://other", KeyProjectID: "1", KeyPipeline: "5"}, "", ""},
		{"other project", nil, rec("43", "team-b/app", "1", "1"), "belongs to project team-b/app (id 43), not to this project team-a/app (id 42)", ""},
		{"other project, takeover var", map[string]string{EnvTakeover: "yes"}, rec("43", "team-b/app", "1", "1"), "", "taking it over from project team-b/app (id 43)"},
		{"other project, shared by id and path", map[string]string{EnvShare: "team-a/app, 43"}, rec("43", "team-b/app", "1", "1"), "", ""},
		{"other project, only one shared", map[string]string{EnvShare: "43"}, rec("43", "team-b/app", "1", "1"), "refusing to take it over", ""},
		{"guard off", map[string]string{EnvGuard: "off"}, rec("43", "team-b/app", "1", "1"), "", ""},
	}
	for _, c := range cases {
		d, err := guard(t, c.extra).Check("deployment.apps/web in namespace prod", c.rec)
		switch {
		case c.refuse == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.refuse != "" && (err == nil || !errors.As(err, &ref) || !strings.Contains(err.Error(), c.refuse)):
			t.Errorf("%s: got %v, want a refusal with %q", c.name, err, c.refuse)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: refusal is not one line: %q", c.name, err)
		case !strings.Contains(d.Note, c.note) || (c.note == "" && d.Note != ""):
			t.Errorf("%s: note %q, want %q", c.name, d.Note, c.note)
		}
	}
}
