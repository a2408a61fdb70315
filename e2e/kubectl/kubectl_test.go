// Package kubectl_test runs the built ferry binary as `kubectl` (a symlink
// named kubectl, as in a job's bin dir) against the real API server.
package kubectl_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
)

var (
	c      *cluster.Cluster
	binDir string // holds kubectl -> ferry
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-kubectl-e2e-")
	if err != nil {
		panic(err)
	}
	// A job's bin/kubectl links to the engine (ferry unpacks it from itself
	// in prepare), so that is what runs here too.
	ferry, err := ferrybuild.BuildEngine(dir)
	if err != nil {
		panic(err)
	}
	binDir = filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		panic(err)
	}
	if err := os.Symlink(ferry, filepath.Join(binDir, "kubectl")); err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cluster.Main(m, &c, cluster.Options{SimulateRollouts: true, RolloutDelay: 100 * time.Millisecond})
}

// kubectl runs ferry-as-kubectl with path as the rest of PATH.
func kubectl(t *testing.T, path, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kubectl"), append([]string{"--kubeconfig", c.AdminKubeconfigPath}, args...)...)
	cmd.Env = []string{"PATH=" + binDir + string(filepath.ListSeparator) + path, "HOME=" + t.TempDir(), "FERRY_STATE_DIR=" + t.TempDir()}
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func want(t *testing.T, out string, code, wantCode int, parts ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit %d, want %d:\n%s", code, wantCode, out)
	}
	for _, p := range parts {
		if !strings.Contains(out, p) {
			t.Errorf("output lacks %q:\n%s", p, out)
		}
	}
}

const cm = `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: verbs
data:
  a: "1"
`

func TestCreateGetDelete(t *testing.T) {
	out, code := kubectl(t, "", "", "create", "namespace", "verbs")
	want(t, out, code, 0, "namespace/verbs created")
	out, code = kubectl(t, "", "", "create", "namespace", "verbs")
	want(t, out, code, 1, `Error from server (AlreadyExists): namespaces "verbs" already exists`)

	out, code = kubectl(t, "", cm, "create", "-f", "-")
	want(t, out, code, 0, "configmap/settings created")
	out, code = kubectl(t, "", cm, "create", "-f", "-")
	want(t, out, code, 1, "Error from server (AlreadyExists)", `configmaps "settings" already exists`)

	out, code = kubectl(t, "", "", "get", "configmaps", "-n", "verbs", "-o", "name")
	want(t, out, code, 0, "configmap/settings")
	out, code = kubectl(t, "", "", "get", "cm", "settings", "-n", "verbs", "-o", "jsonpath={.data.a}")
	if code != 0 || out != "1" {
		t.Errorf("jsonpath: exit %d, %q", code, out)
	}
	out, code = kubectl(t, "", "", "get", "configmap", "-n", "verbs")
	want(t, out, code, 0, "NAME", "DATA", "settings")

	out, code = kubectl(t, "", cm, "delete", "-f", "-")
	want(t, out, code, 0, `configmap "settings" deleted`)
	out, code = kubectl(t, "", "", "get", "configmap", "settings", "-n", "verbs")
	want(t, out, code, 1, `Error from server (NotFound): configmaps "settings" not found`)

	kubectl(t, "", cm, "apply", "-f", "-")
	out, code = kubectl(t, "", "", "delete", "configmap", "settings", "-n", "verbs")
	want(t, out, code, 0, `configmap "settings" deleted`)
}

func TestRolloutStatus(t *testing.T) {
	dep := func(name, ann string) string {
		return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ` + name + `
  namespace: default
  annotations: {` + ann + `}
spec:
  selector: {matchLabels: {app: ` + name + `}}
  template:
    metadata: {labels: {app: ` + name + `}}
    spec: {containers: [{name: app, image: "registry.example.com/app:1"}]}
`
	}
	out, code := kubectl(t, "", dep("ready", "")+"---\n"+dep("stuck", cluster.NeverReadyAnnotation+`: "true"`), "apply", "-f", "-")
	want(t, out, code, 0, "deployment.apps/ready created", "deployment.apps/stuck created")
	out, code = kubectl(t, "", "", "rollout", "status", "deployment/ready", "--timeout=30s")
	want(t, out, code, 0, `deployment "ready" successfully rolled out`)
	out, code = kubectl(t, "", "", "rollout", "status", "deployment/stuck", "--timeout=2s")
	want(t, out, code, 1, "deployment.apps/stuck")
}

func TestConfigViewRedacts(t *testing.T) {
	out, code := kubectl(t, "", "", "config", "view")
	want(t, out, code, 0, "DATA+OMITTED", "REDACTED")
	token := c.AdminRESTConfig().BearerToken
	if token == "" || strings.Contains(out, token) {
		t.Errorf("config view printed the token (or there is none to test)")
	}
	out, code = kubectl(t, "", "", "config", "view", "--raw")
	want(t, out, code, 0, token)
}

// A verb ferry does not implement goes to a real kubectl when one is on
// PATH besides ferry's own, and is refused clearly when none is.
func TestUnsupportedVerb(t *testing.T) {
	out, code := kubectl(t, "/nonexistent", "", "describe", "namespace", "default")
	want(t, out, code, 1, `ferry's kubectl does not implement "describe"`, "ferry implements: apply")

	fake := t.TempDir()
	script := "#!/bin/sh\necho \"real kubectl got: $*\"\nexit 7\n"
	if err := os.WriteFile(filepath.Join(fake, "kubectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code = kubectl(t, fake+":/usr/bin:/bin", "", "describe", "namespace", "default")
	want(t, out, code, 7, "real kubectl got: --kubeconfig "+c.AdminKubeconfigPath+" describe namespace default")
}

func TestUnknownKindAndBadYAML(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [unclosed\n"), 0o644)
	out, code := kubectl(t, "", "", "apply", "-f", bad)
	want(t, out, code, 1, "error: "+bad+":")
	out, code = kubectl(t, "", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "apply", "-f", "-")
	want(t, out, code, 1, `no matches for kind "Widget"`)
}
