package clientconfig_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
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

// TestBuildKeepsRunnerPlugins: a CLI plugin the runner user installed
// (~/.docker/cli-plugins, where `docker compose` v2 usually lives) is found
// by the real docker CLI with the job's DOCKER_CONFIG, and the job's own
// cli-plugins dir is its own (not a link into the runner user's).
func TestBuildKeepsRunnerPlugins(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("docker CLI missing in CI: make tools (run by .ci/run) installs docker.io")
		}
		t.Skip("SKIPPED: no docker CLI on PATH (install docker.io; `make tools` does)")
	}
	from, dir := t.TempDir(), filepath.Join(t.TempDir(), "job")
	os.WriteFile(filepath.Join(from, "config.json"), []byte(`{"cliPluginsExtraDirs":["/opt/admin-plugins"]}`), 0o600)
	os.MkdirAll(filepath.Join(from, "cli-plugins"), 0o700)
	plugin := "#!/bin/sh\n" +
		`if [ "$1" = docker-cli-plugin-metadata ]; then echo '{"SchemaVersion":"0.1.0","Vendor":"ferry test","Version":"v1","ShortDescription":"t"}'; exit 0; fi` + "\n" +
		"echo ferrytest-plugin-ran \"$@\"\n"
	os.WriteFile(filepath.Join(from, "cli-plugins", "docker-ferrytest"), []byte(plugin), 0o755)

	res, err := clientconfig.Build(from, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(from, "cli-plugins"); res.PluginsDir != want {
		t.Fatalf("PluginsDir %q, want %q", res.PluginsDir, want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	var cfg struct {
		Extra []string `json:"cliPluginsExtraDirs"`
	}
	json.Unmarshal(b, &cfg)
	if len(cfg.Extra) != 2 || cfg.Extra[0] != "/opt/admin-plugins" || cfg.Extra[1] != res.PluginsDir {
		t.Fatalf("cliPluginsExtraDirs: %s", b)
	}
	cmd := exec.Command(docker, "ferrytest", "--flag")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dir, "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ferrytest-plugin-ran ferrytest --flag") {
		t.Fatalf("the runner's plugin is not found with the job's DOCKER_CONFIG: %v\n%s", err, out)
	}
	if _, err := os.Lstat(filepath.Join(dir, "cli-plugins")); err == nil {
		t.Fatal("the job's cli-plugins dir exists (a copy or a link of the runner's)")
	}
	// Without a runner plugins dir nothing is added.
	dir2 := filepath.Join(t.TempDir(), "job")
	if res, err := clientconfig.Build(t.TempDir(), dir2, nil); err != nil || res.PluginsDir != "" {
		t.Fatalf("%v %+v", err, res)
	}
	if b, _ := os.ReadFile(filepath.Join(dir2, "config.json")); strings.Contains(string(b), "cliPluginsExtraDirs") {
		t.Fatalf("config.json: %s", b)
	}
}
