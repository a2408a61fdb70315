package holder

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRegistryOf(t *testing.T) {
	for img, want := range map[string]string{
		"nginx": "docker.io", "library/nginx:1": "docker.io", "registry.gitlab.com/g/p:1": "registry.gitlab.com",
		"127.0.0.1:5000/web:1": "127.0.0.1:5000", "localhost/x": "localhost", "user/repo@sha256:ab": "docker.io",
	} {
		if got := RegistryOf(img); got != want {
			t.Errorf("RegistryOf(%q) = %q, want %q", img, got, want)
		}
	}
}

func TestServiceGuards(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"https://reg.example.com/v1/":{"auth":"eDp5"}}}`), 0o600)
	h := &holder{cfg: Config{Dir: dir, DockerConfig: dir, JobToken: "job-token-1234"}}
	if m := h.serviceGuards("app_web", "reg.example.com/app:1", ""); len(m) != 1 || !strings.Contains(m[0], "--with-registry-auth") {
		t.Fatalf("no warning: %v", m)
	}
	if m := h.serviceGuards("app_web", "other.example.com/app:1", ""); len(m) != 0 {
		t.Fatalf("warning for a registry the job did not log in to: %v", m)
	}
	auth, _ := json.Marshal(map[string]string{"username": "gitlab-ci-token", "password": "job-token-1234"})
	if m := h.serviceGuards("app_web", "reg.example.com/app:1", base64.URLEncoding.EncodeToString(auth)); len(m) != 1 || !strings.Contains(m[0], "CI_JOB_TOKEN") {
		t.Fatalf("no CI_JOB_TOKEN note: %v", m)
	}
	auth, _ = json.Marshal(map[string]string{"username": "deploy", "password": "deploy-token"})
	if m := h.serviceGuards("app_web", "reg.example.com/app:1", base64.URLEncoding.EncodeToString(auth)); len(m) != 0 {
		t.Fatalf("note for a deploy token: %v", m)
	}
}

func TestAddWarnings(t *testing.T) {
	resp := &http.Response{StatusCode: 201, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"ID":"abc","Warnings":null}`))}
	if ok, err := addWarnings(resp, []string{"ferry: warning: x"}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	b, _ := io.ReadAll(resp.Body)
	var m struct {
		ID       string
		Warnings []string
	}
	if json.Unmarshal(b, &m) != nil || m.ID != "abc" || len(m.Warnings) != 1 || resp.ContentLength != int64(len(b)) {
		t.Fatalf("%s %d", b, resp.ContentLength)
	}
}

func TestCaptureLoginFromAuthRequest(t *testing.T) {
	dir := t.TempDir()
	h := &holder{cfg: Config{Dir: dir}}
	body := `{"username":"deployer","password":"s3cret-pw","serveraddress":"reg.example.com"}`
	req, _ := http.NewRequest("POST", "http://docker/v1.41/auth", strings.NewReader(body))
	h.inspect(req)
	rest, _ := io.ReadAll(req.Body)
	if string(rest) != body {
		t.Fatalf("body not passed on: %q", rest)
	}
	got, _ := os.ReadFile(filepath.Join(dir, CapturedFile))
	want := base64.StdEncoding.EncodeToString([]byte("deployer:s3cret-pw"))
	if !bytes.Contains(got, []byte("s3cret-pw")) || !bytes.Contains(got, []byte(want)) {
		t.Fatalf("captured: %q", got)
	}
}
