package holder

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/deployguard"
)

// fakeEngine answers the guard's list requests with containers of the
// given labels and records what reaches it.
type fakeEngine struct {
	containers []map[string]any
	seen       []string
	created    map[string]any
}

func (e *fakeEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.seen = append(e.seen, r.Method+" "+r.URL.Path)
	switch {
	case r.URL.Path == "/v1.41/containers/json" || r.URL.Path == "/containers/json":
		json.NewEncoder(w).Encode(e.containers)
	case strings.HasSuffix(r.URL.Path, "/containers/create"):
		json.NewDecoder(r.Body).Decode(&e.created)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"Id":"new"}`)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func TestGuardDeploysCompose(t *testing.T) {
	newer := map[string]any{"Id": "aaaaaaaaaaaaaaaa", "Names": []string{"/web_web_1"}, "Labels": map[string]string{
		composeProjectLabel: "web", deployguard.KeyInstance: "https://gl", deployguard.KeyProjectID: "42",
		deployguard.KeyProject: "g/app", deployguard.KeyPipeline: "200", deployguard.KeyJob: "2000"}}
	for _, tc := range []struct {
		name     string
		pipeline int64
		job      int64
		refused  bool
	}{
		{"newer pipeline", 300, 3000, false},
		{"older pipeline", 100, 1000, true},
		{"older pipeline, retried job", 100, 2500, false},
	} {
		eng := &fakeEngine{containers: []map[string]any{newer}}
		srv := httptest.NewServer(eng)
		dir := t.TempDir()
		h := &holder{cfg: Config{Dir: dir, Guard: &deployguard.Guard{ID: deployguard.Identity{
			Instance: "https://gl", ProjectID: 42, ProjectPath: "g/app", PipelineID: tc.pipeline, JobID: tc.job}}}, log: io.Discard}
		u, _ := url.Parse(srv.URL)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		proxied := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.URL.Scheme, r.URL.Host, r.RequestURI = "http", u.Host, ""
			resp, err := tr.RoundTrip(r)
			if err != nil {
				t.Fatal(err)
			}
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
		})
		rewrite := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r.URL.Host = u.Host
			return tr.RoundTrip(r)
		})
		front := httptest.NewServer(h.guardDeploys(proxied, rewrite))
		do := func(method, path, body string) (int, string) {
			req, _ := http.NewRequest(method, front.URL+path, strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		filters := url.QueryEscape(`{"label":["com.docker.compose.project=web","com.docker.compose.oneoff=False"]}`)
		do("GET", "/v1.41/containers/json?all=1&filters="+filters, "")
		stopCode, stopMsg := do("POST", "/v1.41/containers/aaaaaaaaaaaa/stop", "")
		code, msg := do("POST", "/v1.41/containers/create?name=web_web_1", `{"Image":"x","HostConfig":{"Memory":123456789012},"Labels":{"com.docker.compose.project":"web"}}`)
		if tc.refused {
			if code != http.StatusConflict || !strings.Contains(msg, "ferry: compose project web was deployed by pipeline 200 of g/app (id 42), newer than this pipeline 100") {
				t.Errorf("%s: create %d %s", tc.name, code, msg)
			}
			if stopCode != http.StatusConflict || !strings.Contains(stopMsg, "refusing") {
				t.Errorf("%s: stop of the project's container %d %s", tc.name, stopCode, stopMsg)
			}
			for _, s := range eng.seen {
				if strings.HasPrefix(s, "POST") {
					t.Errorf("%s: %s reached the engine", tc.name, s)
				}
			}
		} else {
			if code != http.StatusCreated || stopCode != http.StatusNoContent {
				t.Errorf("%s: create %d %s, stop %d %s", tc.name, code, msg, stopCode, stopMsg)
			}
			labels, _ := eng.created["Labels"].(map[string]any)
			if labels[deployguard.KeyPipeline] != itoa(tc.pipeline) || labels[composeProjectLabel] != "web" {
				t.Errorf("%s: created with labels %v", tc.name, labels)
			}
			hc, _ := eng.created["HostConfig"].(map[string]any)
			if hc["Memory"] != float64(123456789012) {
				t.Errorf("%s: the body's other fields changed: %v", tc.name, eng.created)
			}
		}
		front.Close()
		srv.Close()
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestLabelFilter(t *testing.T) {
	for f, want := range map[string]string{
		`{"label":["com.docker.compose.project=web"]}`:                                   "web",
		`{"label":{"com.docker.compose.project=web":true}}`:                              "web",
		`{"label":["com.docker.compose.oneoff=False","com.docker.compose.project=a_b"]}`: "a_b",
		`{"name":["x"]}`: "",
		`not json`:       "",
	} {
		if got := labelFilter(f, composeProjectLabel); got != want {
			t.Errorf("labelFilter(%s) = %q, want %q", f, got, want)
		}
	}
}
