package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/proctest"
)

// binDir holds kubectl -> ferry-kubectl, with ferry-engine beside the
// target, as prepare leaves them; no other kubectl is on PATH.
var binDir, engineDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-kubectl-test-")
	if err != nil {
		panic(err)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		engineDir = filepath.Join(dir, "engine")
		if binDir, err = ferrybuild.KubectlBinDir(engineDir); err != nil {
			panic(err)
		}
		return m.Run()
	}()
	os.Exit(code)
}

// kubeconfig points at a port where nothing listens.
func kubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\n" +
		"users:\n- name: u\n  user: {token: t0ken}\ncontexts:\n- name: ctx\n  context: {cluster: c, user: u, namespace: shark}\ncurrent-context: ctx\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kubectl"), args...)
	cmd.Env = []string{"PATH=" + binDir + ":/nonexistent", "HOME=" + t.TempDir(), "KUBECONFIG=" + kubeconfig(t)}
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), proctest.ExitCode(t, err)
}

// Verbs ferry does not write run kubectl's own code in the engine, with the
// same arguments, through the job's kubectl.
func TestOtherVerbsRunInTheEngine(t *testing.T) {
	out, code := run(t, "", "create", "deployment", "web", "--image=nginx:1", "--dry-run=client", "-o", "name")
	if code != 0 || out != "deployment.apps/web\n" {
		t.Errorf("create deployment (kubectl's generator): exit %d %q", code, out)
	}
	out, code = run(t, "", "config", "view", "-o", "jsonpath={.contexts[0].context.namespace} {.users[0].user.token}")
	if code != 0 || out != "shark REDACTED" {
		t.Errorf("config view (kubectl's): exit %d %q", code, out)
	}
	out, code = run(t, "", "no-such-verb")
	if code != 1 || !strings.Contains(out, `unknown command "no-such-verb" for "kubectl"`) {
		t.Errorf("unknown verb: exit %d %q", code, out)
	}
}

// apply -f - of a custom resource needs discovery, which only the engine
// links: the engine gets the manifest the small kubectl already read.
func TestStdinHandedToTheEngine(t *testing.T) {
	cr := "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
	out, code := run(t, cr, "apply", "-f", "-", "--dry-run=server")
	// The engine read the Widget and asked the (absent) API server's
	// discovery about it; without stdin it would have no objects.
	if code != 1 || strings.Contains(out, "no objects passed to apply") || !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// Built-in kinds are the small kubectl's own: with its engine gone, apply
// still runs (and fails on the absent server), other verbs say what is
// missing.
func TestBuiltinKindsNeedNoEngine(t *testing.T) {
	engine := filepath.Join(engineDir, "ferry-engine")
	if err := os.Rename(engine, engine+".away"); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(engine+".away", engine)
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n"
	out, code := run(t, cm, "apply", "-f", "-")
	if code != 1 || strings.Contains(out, "engine") || !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("apply of a ConfigMap without the engine: exit %d:\n%s", code, out)
	}
	// create's generators need no server with --dry-run=client (GitLab's
	// registry secret recipe pipes this into apply).
	out, code = run(t, "", "create", "secret", "generic", "s", "--from-literal=a=b", "--dry-run=client", "-o", "name")
	if code != 0 || out != "secret/s\n" {
		t.Errorf("create secret --dry-run=client without the engine: exit %d %q", code, out)
	}
	out, code = run(t, "", "version", "--client")
	if code != 0 || !strings.Contains(out, "Client Version: ferry") {
		t.Errorf("version --client: exit %d %q", code, out)
	}
	out, code = run(t, "", "describe", "pod", "x")
	if code != 1 || !strings.Contains(out, "ferry's engine, which is missing") || !strings.Contains(out, engine) {
		t.Errorf("describe without the engine: exit %d %q", code, out)
	}
}
