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
	"gitlab.com/ferry-ci/ferry/internal/proctest"
)

var (
	c      *cluster.Cluster
	binDir string // holds kubectl -> ferry
)

func TestMain(m *testing.M) {
	// Removed by cluster.Main (os.Exit skips deferred calls).
	dir, err := ferrybuild.SharedDir()
	if err != nil {
		panic(err)
	}
	// A job's bin/kubectl links to the small kubectl, with the engine
	// beside it (ferry unpacks both in prepare): that is what runs here too.
	if binDir, err = ferrybuild.KubectlBinDir(dir); err != nil {
		panic(err)
	}
	cluster.Main(m, &c, cluster.Options{SimulateRollouts: true, RolloutDelay: 100 * time.Millisecond})
}

// kubectl runs ferry-as-kubectl with path as the rest of PATH.
func kubectl(t *testing.T, path, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kubectl"), append([]string{"--kubeconfig", c.AdminKubeconfigPath}, args...)...)
	cmd.Env = []string{"PATH=" + binDir + string(filepath.ListSeparator) + path, "HOME=" + t.TempDir(), "FERRY_STATE_DIR=" + t.TempDir()}
	return run(t, cmd, stdin)
}

// run runs cmd with stdin and returns its combined output and exit code.
func run(t *testing.T, cmd *exec.Cmd, stdin string) (string, int) {
	t.Helper()
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), proctest.ExitCode(t, err)
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
	// kubectl's own rollout status (ferry's was deleted: docs/kubectl.md),
	// through the job's small kubectl and its engine.
	out, code = kubectl(t, "", "", "rollout", "status", "deployment/ready", "--timeout=30s")
	want(t, out, code, 0, `deployment "ready" successfully rolled out`)
	out = same(t, "rollout", "status", "deployment/stuck", "--timeout=2s")
	if !strings.HasSuffix(out, "error: timed out waiting for the condition\n") {
		t.Errorf("stuck rollout: %q", out)
	}
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

func TestUnknownKindAndBadYAML(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [unclosed\n"), 0o644)
	out, code := kubectl(t, "", "", "apply", "-f", bad)
	want(t, out, code, 1, "error: "+bad+":")
	out, code = kubectl(t, "", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "apply", "-f", "-")
	want(t, out, code, 1, `no matches for kind "Widget"`)
}

// realKubectl runs the reference kubectl (ferrybuild.ReferenceKubectl) with the
// same kubeconfig, for side-by-side checks of ferry's output.
func realKubectl(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	bin, err := ferrybuild.ReferenceKubectl()
	if err != nil {
		t.Fatalf("the reference kubectl: %v", err)
	}
	if real, _ := filepath.EvalSymlinks(bin); real == filepath.Join(binDir, "kubectl") {
		t.Fatalf("%s is ferry, not the real kubectl", bin)
	}
	cmd := exec.Command(bin, append([]string{"--kubeconfig", c.AdminKubeconfigPath}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	return run(t, cmd, stdin)
}

// same runs args with ferry and with the real kubectl and requires the same
// output and exit code: for commands whose result does not depend on which
// of the two ran first (errors, reads, waits).
func same(t *testing.T, args ...string) string {
	t.Helper()
	got, code := kubectl(t, "", "", args...)
	want, wantCode := realKubectl(t, "", args...)
	if got != want || code != wantCode {
		t.Errorf("%v:\nferry (exit %d):\n%s\nkubectl (exit %d):\n%s", args, code, got, wantCode, want)
	}
	return got
}

// workload is a Deployment, StatefulSet or DaemonSet in namespace
// workloads with an init container and two containers; ann goes into its
// metadata.annotations.
func workload(kind, name, ann string) string {
	extra := ""
	if kind == "StatefulSet" {
		extra = "  serviceName: " + name + "\n"
	}
	return `apiVersion: apps/v1
kind: ` + kind + `
metadata:
  name: ` + name + `
  namespace: workloads
  annotations: {` + ann + `}
spec:
` + extra + `  selector: {matchLabels: {app: ` + name + `}}
  template:
    metadata: {labels: {app: ` + name + `}}
    spec:
      initContainers: [{name: init, image: "busybox:1"}]
      containers: [{name: app, image: "registry.example.com/app:1"}, {name: side, image: "nginx:1"}]
`
}

func setupWorkloads(t *testing.T, docs ...string) {
	t.Helper()
	kubectl(t, "", "", "create", "namespace", "workloads") // AlreadyExists after the first test is fine
	out, code := kubectl(t, "", strings.Join(docs, "---\n"), "apply", "-f", "-")
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
}

func jsonpath(t *testing.T, tmpl string, args ...string) string {
	t.Helper()
	out, code := kubectl(t, "", "", append([]string{"get", "-n", "workloads", "-o", "jsonpath=" + tmpl}, args...)...)
	if code != 0 {
		t.Fatalf("get %v %s: exit %d\n%s", args, tmpl, code, out)
	}
	return out
}

func TestRolloutRestart(t *testing.T) {
	setupWorkloads(t, workload("Deployment", "restart-ferry", ""), workload("Deployment", "restart-kubectl", ""),
		workload("StatefulSet", "restart-db", ""), workload("DaemonSet", "restart-agent", ""))
	genBefore := jsonpath(t, "{.metadata.generation}", "deployment/restart-ferry")
	start := time.Now().Add(-time.Second)

	out, code := kubectl(t, "", "", "rollout", "restart", "-n", "workloads", "deployment/restart-ferry")
	// The real kubectl's line for its own Deployment, with the name swapped.
	want, wantCode := realKubectl(t, "", "rollout", "restart", "-n", "workloads", "deployment/restart-kubectl")
	if code != 0 || out != "deployment.apps/restart-ferry restarted\n" || wantCode != 0 || strings.ReplaceAll(want, "kubectl", "ferry") != out {
		t.Errorf("ferry (exit %d) %q, kubectl (exit %d) %q", code, out, wantCode, want)
	}
	at := jsonpath(t, `{.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}`, "deployment/restart-ferry")
	ts, err := time.Parse(time.RFC3339, at)
	if err != nil || ts.Before(start) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("restartedAt %q (%v), want an RFC 3339 time of now", at, err)
	}
	if gen := jsonpath(t, "{.metadata.generation}", "deployment/restart-ferry"); gen == genBefore {
		t.Errorf("generation still %s: the pod template did not change", gen)
	}
	// The same field manager as kubectl's, so managedFields agree.
	mgrs := jsonpath(t, `{range .metadata.managedFields[*]}{.manager}{","}{end}`, "deployment/restart-ferry")
	if !strings.Contains(mgrs, "kubectl-rollout,") {
		t.Errorf("managers %q lack kubectl-rollout", mgrs)
	}

	out, code = kubectl(t, "", "", "rollout", "restart", "-n", "workloads", "statefulset/restart-db", "ds/restart-agent")
	want = "statefulset.apps/restart-db restarted\ndaemonset.apps/restart-agent restarted\n"
	if code != 0 || out != want {
		t.Errorf("statefulset and daemonset: exit %d %q, want %q", code, out, want)
	}
	for _, ref := range []string{"statefulset/restart-db", "daemonset/restart-agent"} {
		if at := jsonpath(t, `{.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}`, ref); at == "" {
			t.Errorf("%s has no restartedAt", ref)
		}
	}

	// Refusals, word for word kubectl's.
	same(t, "rollout", "restart", "service/kubernetes")
	same(t, "rollout", "restart", "-n", "workloads", "deployment/nope")
	same(t, "rollout", "restart", "-n", "workloads", "replicaset")
}

func TestSetImage(t *testing.T) {
	setupWorkloads(t, workload("Deployment", "image-ferry", ""), workload("Deployment", "image-kubectl", ""))
	images := func(name string) string {
		return jsonpath(t, "{.spec.template.spec.initContainers[*].image} {.spec.template.spec.containers[*].image}", "deployment/"+name)
	}
	for _, tc := range []struct {
		args   []string // after set image -n workloads deployment/NAME
		out    string   // ferry's output for image-ferry
		code   int
		images string // image-ferry's images afterwards
	}{
		{[]string{"app=registry.example.com/app:2"}, "deployment.apps/image-ferry image updated\n", 0, "busybox:1 registry.example.com/app:2 nginx:1"},
		// Nothing to change: kubectl prints nothing and exits 0.
		{[]string{"app=registry.example.com/app:2"}, "", 0, "busybox:1 registry.example.com/app:2 nginx:1"},
		{[]string{"init=busybox:2"}, "deployment.apps/image-ferry image updated\n", 0, "busybox:2 registry.example.com/app:2 nginx:1"},
		// An unknown container is named; the known ones still change.
		{[]string{"nope=x:1"}, "error: unable to find container named \"nope\"\n", 1, "busybox:2 registry.example.com/app:2 nginx:1"},
		{[]string{"nope=x:1", "side=nginx:2"}, "deployment.apps/image-ferry image updated\nerror: unable to find container named \"nope\"\n", 1, "busybox:2 registry.example.com/app:2 nginx:2"},
		{[]string{"app=x:9", "--dry-run=server"}, "deployment.apps/image-ferry image updated (server dry run)\n", 0, "busybox:2 registry.example.com/app:2 nginx:2"},
		{[]string{"*=registry.example.com/all:3"}, "deployment.apps/image-ferry image updated\n", 0, "registry.example.com/all:3 registry.example.com/all:3 registry.example.com/all:3"},
		{[]string{"app="}, "error: failed to patch image update to pod template: Deployment.apps \"image-ferry\" is invalid: spec.template.spec.containers[0].image: Required value\n", 1, "registry.example.com/all:3 registry.example.com/all:3 registry.example.com/all:3"},
	} {
		args := append([]string{"set", "image", "-n", "workloads", "deployment/image-ferry"}, tc.args...)
		out, code := kubectl(t, "", "", args...)
		if out != tc.out || code != tc.code {
			t.Errorf("%v: exit %d %q, want exit %d %q", tc.args, code, out, tc.code, tc.out)
		}
		if got := images("image-ferry"); got != tc.images {
			t.Errorf("%v: images %q, want %q", tc.args, got, tc.images)
		}
		// The real kubectl, on its own Deployment, which went through the
		// same steps: the same lines, the same images.
		want, wantCode := realKubectl(t, "", append([]string{"set", "image", "-n", "workloads", "deployment/image-kubectl"}, tc.args...)...)
		if strings.ReplaceAll(want, "image-kubectl", "image-ferry") != out || wantCode != code {
			t.Errorf("%v: ferry (exit %d) %q, kubectl (exit %d) %q", tc.args, code, out, wantCode, want)
		}
		if got, theirs := images("image-ferry"), images("image-kubectl"); got != theirs {
			t.Errorf("%v: ferry left %q, kubectl %q", tc.args, got, theirs)
		}
	}
	mgrs := jsonpath(t, `{range .metadata.managedFields[*]}{.manager}{","}{end}`, "deployment/image-ferry")
	if !strings.Contains(mgrs, "kubectl-set,") {
		t.Errorf("managers %q lack kubectl-set", mgrs)
	}
	same(t, "set", "image", "service/kubernetes", "app=x")
	same(t, "set", "image", "-n", "workloads", "deployment/nope", "app=x")
	same(t, "set", "image", "-n", "workloads", "deployment/image-ferry", "app")
	same(t, "set", "image", "-n", "workloads", "deployment/image-ferry")
}

func TestWait(t *testing.T) {
	setupWorkloads(t, workload("Deployment", "wait-ready", ""), workload("Deployment", "wait-stuck", cluster.NeverReadyAnnotation+`: "true"`))
	// Success: the simulator makes wait-ready Available after its delay, so
	// this waits for a change, not just a look at the object.
	out, code := kubectl(t, "", "", "wait", "-n", "workloads", "--for=condition=Available", "--timeout=30s", "deployment/wait-ready")
	want(t, out, code, 0)
	if out != "deployment.apps/wait-ready condition met\n" {
		t.Errorf("wait: %q", out)
	}
	same(t, "wait", "-n", "workloads", "--for=condition=available=TRUE", "deploy/wait-ready")
	same(t, "wait", "-n", "workloads", "--for=jsonpath={.status.readyReplicas}=1", "deployment/wait-ready")
	same(t, "wait", "-n", "workloads", "--for=jsonpath=.status.readyReplicas", "deployment/wait-ready", "-o", "name")

	// Timeout: exit 1, kubectl's message, after about --timeout.
	start := time.Now()
	out = same(t, "wait", "-n", "workloads", "--for=condition=Available", "--timeout=2s", "deployment/wait-stuck")
	if out != "error: timed out waiting for the condition on deployments/wait-stuck\n" {
		t.Errorf("timeout: %q", out)
	}
	if d := time.Since(start); d < 4*time.Second || d > 15*time.Second {
		t.Errorf("two 2 s timeouts took %v", d)
	}
	same(t, "wait", "-n", "workloads", "--for=condition=Available", "--timeout=0", "deployment/wait-stuck")
	same(t, "wait", "-n", "workloads", "--for=condition=Available", "--timeout=1s", "deployment/wait-ready", "deployment/wait-stuck", "deployment/nope")
	same(t, "wait", "-n", "workloads", "--for=jsonpath={.status.conditions}=x", "deployment/wait-ready")
	same(t, "wait", "-n", "workloads", "--for=condition=Available", "deployment")

	// --for=delete: one already gone is fine; one deleted while waiting is
	// seen when it goes.
	same(t, "wait", "-n", "workloads", "--for=delete", "--timeout=2s", "deployment/nope")
	setupWorkloads(t, workload("Deployment", "wait-gone", ""))
	go func() {
		time.Sleep(time.Second)
		cmd := exec.Command(filepath.Join(binDir, "kubectl"), "--kubeconfig", c.AdminKubeconfigPath, "delete", "-n", "workloads", "deployment/wait-gone")
		cmd.Env = []string{"PATH=" + binDir, "HOME=" + os.TempDir()}
		cmd.Run()
	}()
	start = time.Now()
	out, code = kubectl(t, "", "", "wait", "-n", "workloads", "--for=delete", "--timeout=20s", "deployment/wait-gone")
	if code != 0 || out != "deployment.apps/wait-gone condition met\n" || time.Since(start) < 900*time.Millisecond {
		t.Errorf("wait for delete: exit %d %q after %v", code, out, time.Since(start))
	}
}

// config view -o jsonpath prints what the real kubectl prints: the token
// REDACTED and the CA DATA+OMITTED unless --raw.
func TestConfigViewJSONPath(t *testing.T) {
	token := c.AdminRESTConfig().BearerToken
	if token == "" {
		t.Fatal("the admin kubeconfig has no token to test redaction with")
	}
	out := same(t, "config", "view", "-o", "jsonpath={.users[0].user.token}")
	if out != "REDACTED" {
		t.Errorf("token without --raw: %q", out)
	}
	out = same(t, "config", "view", "--raw", "-o", "jsonpath={.users[0].user.token}")
	if out != token {
		t.Errorf("token with --raw: %q", out)
	}
	out = same(t, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server} {.clusters[0].cluster.certificate-authority-data}")
	if out != c.URL+" DATA+OMITTED" {
		t.Errorf("server and CA: %q", out)
	}
	same(t, "config", "view", "-o", "jsonpath={.current-context}")
	same(t, "config", "view", "-o", "jsonpath={.users[0]")
}

// The create generators make the objects the real kubectl makes, on the
// server: the same lines, the same type and data.
func TestCreateGenerators(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
		"-subj", "/CN=shark.example", "-keyout", key, "-out", crt).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	env := filepath.Join(dir, "app.env")
	os.WriteFile(env, []byte("A=1\n# comment\nB=two words\n"), 0o600)
	kubectl(t, "", "", "create", "namespace", "generators")
	for _, tc := range []struct {
		name string   // the objects are NAME-ferry and NAME-kubectl
		args []string // NAME is replaced by each
		ref  string   // kind/NAME for the checks
		tmpl string   // what must be the same on both objects
	}{
		{"registry", []string{"secret", "docker-registry", "NAME", "--docker-server=registry.gitlab.com", "--docker-username=deploy", "--docker-password=s3cret", "--docker-email=ci@example.com"},
			"secret/NAME", "{.type} {.data.\\.dockerconfigjson}"},
		{"generic", []string{"secret", "generic", "NAME", "--from-literal=user=admin", "--from-literal=password=s3 cret", "--from-file=app.env=" + env, "--type=example.com/custom"},
			"secret/NAME", "{.type} {.data}"},
		{"tls", []string{"secret", "tls", "NAME", "--cert=" + crt, "--key=" + key}, "secret/NAME", "{.type} {.data}"},
		{"settings", []string{"configmap", "NAME", "--from-literal=k=v", "--from-file=settings=" + env}, "configmap/NAME", "{.data}"},
		{"env", []string{"configmap", "NAME", "--from-env-file=" + env}, "configmap/NAME", "{.data}"},
	} {
		args := func(who string) []string {
			// -n before the generator, as CI scripts often write it.
			a := []string{"create", "-n", "generators"}
			for _, s := range tc.args {
				a = append(a, strings.ReplaceAll(s, "NAME", tc.name+"-"+who))
			}
			return a
		}
		out, code := kubectl(t, "", "", args("ferry")...)
		want, wantCode := realKubectl(t, "", args("kubectl")...)
		if code != 0 || wantCode != 0 || strings.ReplaceAll(want, "-kubectl", "-ferry") != out {
			t.Errorf("%v: ferry (exit %d) %q, kubectl (exit %d) %q", tc.args, code, out, wantCode, want)
			continue
		}
		mine := jsonpathIn(t, "generators", tc.tmpl, strings.ReplaceAll(tc.ref, "NAME", tc.name+"-ferry"))
		theirs := jsonpathIn(t, "generators", tc.tmpl, strings.ReplaceAll(tc.ref, "NAME", tc.name+"-kubectl"))
		if mine == "" || mine != theirs {
			t.Errorf("%v: ferry's object has %q, kubectl's %q", tc.args, mine, theirs)
		}
		// Creating again is AlreadyExists, as with kubectl.
		out, code = kubectl(t, "", "", args("ferry")...)
		want, wantCode = realKubectl(t, "", args("kubectl")...)
		if code != 1 || wantCode != 1 || strings.ReplaceAll(want, "-kubectl", "-ferry") != out {
			t.Errorf("%v again: ferry (exit %d) %q, kubectl (exit %d) %q", tc.args, code, out, wantCode, want)
		}
	}
	// A server dry run says so and creates nothing.
	out, code := kubectl(t, "", "", "create", "-n", "generators", "secret", "generic", "dry", "--from-literal=a=b", "--dry-run=server")
	want(t, out, code, 0, "secret/dry created (server dry run)")
	out, code = kubectl(t, "", "", "get", "-n", "generators", "secret", "dry")
	want(t, out, code, 1, `Error from server (NotFound): secrets "dry" not found`)
}

func jsonpathIn(t *testing.T, ns, tmpl, ref string) string {
	t.Helper()
	out, code := kubectl(t, "", "", "get", "-n", ns, "-o", "jsonpath="+tmpl, ref)
	if code != 0 {
		t.Fatalf("get %s %s: exit %d\n%s", ref, tmpl, code, out)
	}
	return out
}
