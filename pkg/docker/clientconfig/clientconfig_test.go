package clientconfig_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/docker/clientconfig"
)

func TestBuild(t *testing.T) {
	from, dir := t.TempDir(), filepath.Join(t.TempDir(), "job")
	os.WriteFile(filepath.Join(from, "config.json"), []byte(`{"auths":{"reg.example.com":{"auth":"dTpw"}},"credsStore":"pass","currentContext":"mon-serveur","detachKeys":"ctrl-x"}`), 0o600)
	write := func(name, host string) {
		d := filepath.Join(from, "contexts", "meta", clientconfig.ContextHash(name))
		os.MkdirAll(d, 0o700)
		os.WriteFile(filepath.Join(d, "meta.json"), []byte(`{"Name":"`+name+`","Metadata":{},"Endpoints":{"docker":{"Host":"`+host+`","SkipTLSVerify":false}}}`), 0o600)
	}
	write("mon-serveur", "ssh://user@server")
	write("tcp-one", "tcp://10.0.0.1:2376")
	os.MkdirAll(filepath.Join(from, "contexts", "tls", "x", "docker"), 0o700)
	os.WriteFile(filepath.Join(from, "contexts", "tls", "x", "docker", "ca.pem"), []byte("CA"), 0o600)

	res, err := clientconfig.Build(from, dir, func(h string) string { return "/state/docker/ctx-" + h[:12] + ".sock" })
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	var cfg map[string]any
	json.Unmarshal(b, &cfg)
	if _, ok := cfg["auths"]; ok || cfg["credsStore"] != nil {
		t.Fatalf("runner logins copied into the job: %s", b)
	}
	if cfg["currentContext"] != "mon-serveur" || cfg["detachKeys"] != "ctrl-x" || res.DroppedAuths != 1 {
		t.Fatalf("settings lost: %s (%+v)", b, res)
	}
	if len(res.SSHContexts) != 1 || res.SSHContexts[0].Name != "mon-serveur" || res.SSHContexts[0].URL != "ssh://user@server" {
		t.Fatalf("ssh contexts: %+v", res.SSHContexts)
	}
	m, _ := os.ReadFile(filepath.Join(dir, "contexts", "meta", clientconfig.ContextHash("mon-serveur"), "meta.json"))
	if !strings.Contains(string(m), `"Host":"unix:///state/docker/ctx-`) {
		t.Fatalf("ssh context not rewritten: %s", m)
	}
	m, _ = os.ReadFile(filepath.Join(dir, "contexts", "meta", clientconfig.ContextHash("tcp-one"), "meta.json"))
	if !strings.Contains(string(m), "tcp://10.0.0.1:2376") {
		t.Fatalf("tcp context changed: %s", m)
	}
	if ca, _ := os.ReadFile(filepath.Join(dir, "contexts", "tls", "x", "docker", "ca.pem")); string(ca) != "CA" {
		t.Fatal("tls material not copied")
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
}

func TestBuildWithoutRunnerConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "job")
	res, err := clientconfig.Build(filepath.Join(t.TempDir(), "missing"), dir, nil)
	if err != nil || len(res.SSHContexts) != 0 {
		t.Fatalf("%v %+v", err, res)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "config.json")); strings.TrimSpace(string(b)) != "{}" {
		t.Fatalf("config.json: %q", b)
	}
}

func TestLoginSecrets(t *testing.T) {
	got := clientconfig.LoginSecrets([]string{"gitlab-ci-token", ""}, []string{"tok-123456", ""})
	want := base64.StdEncoding.EncodeToString([]byte("gitlab-ci-token:tok-123456"))
	if len(got) != 1 || got[0] != want {
		t.Fatalf("%v", got)
	}
}
