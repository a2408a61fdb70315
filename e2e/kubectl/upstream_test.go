package kubectl_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ferryOnly runs ferry's kubectl with nothing else on PATH: no real kubectl
// can be reached, whatever the verb.
func ferryOnly(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	return kubectl(t, "/nonexistent", stdin, args...)
}

// Verbs ferry does not write itself run kubectl's own code, linked into
// ferry's engine: the same output and exit code as the real kubectl, with
// no kubectl on PATH.
func TestUpstreamReadVerbs(t *testing.T) {
	setupWorkloads(t, workload("Deployment", "upstream-read", ""))
	for _, args := range [][]string{
		{"describe", "namespace", "default"},
		{"describe", "-n", "workloads", "deployment/nope"},
		{"auth", "can-i", "create", "deployments", "-n", "workloads"},
		{"auth", "can-i", "frobnicate", "widgets"},
		{"get", "-n", "workloads", "deployment/upstream-read", "-o", "custom-columns=NAME:.metadata.name,IMAGE:.spec.template.spec.containers[0].image"},
		{"get", "-n", "workloads", "deployment/upstream-read", "-o", "go-template={{.metadata.name}}"},
		{"get", "ns", "default", "kube-system", "--show-labels", "--no-headers", "-o", "custom-columns=N:.metadata.name"},
		{"get", "-n", "workloads", "deployments", "--sort-by=.metadata.name", "-o", "name"},
		{"rollout", "history", "-n", "workloads", "deployment/upstream-read"},
		{"api-versions"},
		// -o name: kubectl 1.32's yaml has creationTimestamp: null, 1.37's not.
		{"create", "-n", "workloads", "deployment", "dry", "--image=nginx:1", "--dry-run=client", "-o", "name"},
		{"nosuchverb"},
	} {
		out := same(t, args...)
		if out == "" {
			t.Errorf("%v printed nothing", args)
		}
		got, _ := ferryOnly(t, "", args...)
		if got != out {
			t.Errorf("%v without a kubectl on PATH:\n%s\nwant:\n%s", args, got, out)
		}
	}
}

// Writes through kubectl's own code: each verb on ferry's object and on
// the real kubectl's twin gives the same line, exit code and result.
func TestUpstreamWriteVerbs(t *testing.T) {
	setupWorkloads(t, workload("Deployment", "up-ferry", ""), workload("Deployment", "up-kubectl", ""))
	for _, tc := range []struct {
		args []string // NAME is up-ferry / up-kubectl
		tmpl string   // the result, read back from both
	}{
		{[]string{"label", "deployment/NAME", "tier=web"}, "{.metadata.labels.tier}"},
		{[]string{"label", "deployment/NAME", "tier=db"}, "{.metadata.labels.tier}"}, // exists: refused without --overwrite
		{[]string{"label", "--overwrite", "deployment/NAME", "tier=db"}, "{.metadata.labels.tier}"},
		{[]string{"annotate", "deployment/NAME", "example.com/owner=ops"}, "{.metadata.annotations.example\\.com/owner}"},
		{[]string{"patch", "deployment/NAME", "-p", `{"spec":{"replicas":2}}`}, "{.spec.replicas}"},
		{[]string{"patch", "deployment/NAME", "--type=json", "-p", `[{"op":"replace","path":"/spec/replicas","value":3}]`}, "{.spec.replicas}"},
		{[]string{"scale", "deployment/NAME", "--replicas=4"}, "{.spec.replicas}"},
		{[]string{"scale", "deployment/NAME", "--current-replicas=9", "--replicas=1"}, "{.spec.replicas}"},
		{[]string{"set", "env", "deployment/NAME", "-c", "app", "MODE=prod"}, "{.spec.template.spec.containers[0].env}"},
		{[]string{"set", "resources", "deployment/NAME", "-c", "app", "--limits=cpu=200m"}, "{.spec.template.spec.containers[0].resources}"},
		{[]string{"rollout", "pause", "deployment/NAME"}, "{.spec.paused}"},
		{[]string{"rollout", "resume", "deployment/NAME"}, "{.spec.paused}"},
		{[]string{"label", "deployment/NAME", "tier-"}, "{.metadata.labels}"},
	} {
		args := func(who string) []string {
			a := []string{"-n", "workloads"}
			for _, s := range tc.args {
				a = append(a, strings.ReplaceAll(s, "NAME", "up-"+who))
			}
			return a
		}
		out, code := ferryOnly(t, "", args("ferry")...)
		want, wantCode := realKubectl(t, "", args("kubectl")...)
		if strings.ReplaceAll(want, "up-kubectl", "up-ferry") != out || code != wantCode {
			t.Errorf("%v: ferry (exit %d) %q, kubectl (exit %d) %q", tc.args, code, out, wantCode, want)
		}
		mine := jsonpath(t, tc.tmpl, "deployment/up-ferry")
		theirs := jsonpath(t, tc.tmpl, "deployment/up-kubectl")
		if mine != theirs {
			t.Errorf("%v: ferry's object has %q, kubectl's %q", tc.args, mine, theirs)
		}
	}
}

// Flags of the verbs ferry writes itself that ferry does not implement go
// to kubectl's code instead of being refused: delete -l and
// --grace-period, get -w.
func TestUpstreamFlagsOfFerryVerbs(t *testing.T) {
	kubectl(t, "", "", "create", "namespace", "flags")
	for _, who := range []string{"a", "b", "c"} {
		out, code := ferryOnly(t, "", "create", "-n", "flags", "configmap", "cm-"+who, "--from-literal=k=v")
		want(t, out, code, 0)
		kubectl(t, "", "", "label", "-n", "flags", "configmap/cm-"+who, "sel=yes")
	}
	out, code := ferryOnly(t, "", "delete", "-n", "flags", "configmap", "-l", "sel=yes", "--grace-period=0", "--wait=false")
	want(t, out, code, 0, `configmap "cm-a" deleted`, `configmap "cm-b" deleted`, `configmap "cm-c" deleted`)
	out, code = ferryOnly(t, "", "get", "-n", "flags", "configmaps", "-l", "sel=yes")
	want(t, out, code, 0, "No resources found in flags namespace.")

	// get -w streams changes for as long as it runs, past ferry's
	// response limit (1 s here): the limit is for a response to start.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kubectl"), "--kubeconfig", c.AdminKubeconfigPath,
		"get", "-n", "flags", "configmaps", "-w", "-o", "name")
	cmd.Env = []string{"PATH=" + binDir, "HOME=" + t.TempDir(), "FERRY_STATE_DIR=" + t.TempDir(), "FERRY_KUBECTL_TIMEOUT=1s"}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(2500 * time.Millisecond) // longer than the 1 s limit
	kubectl(t, "", "", "create", "-n", "flags", "configmap", "late", "--from-literal=k=v")
	select {
	case l, ok := <-lines:
		if !ok || l != "configmap/late" {
			t.Errorf("get -w: line %q (open %v), stderr %s", l, ok, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("get -w printed nothing for the new configmap; stderr %s", stderr.String())
	}
}

// stalledServer is an API server address that accepts connections and
// never answers.
func stalledServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	return l.Addr().String()
}

// A stalled API server ends every kind of command (ferry's own verbs, apply,
// kubectl's code) with a clear error in bounded time, by default.
func TestStalledServer(t *testing.T) {
	addr := stalledServer(t)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: s, cluster: {server: "https://`+addr+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t0ken}}]
contexts: [{name: s, context: {cluster: s, user: u, namespace: default}}]
current-context: s
`), 0o600)
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
	run := func(env string, args ...string) (string, int, time.Duration) {
		cmd := exec.Command(filepath.Join(binDir, "kubectl"), append([]string{"--kubeconfig", kc}, args...)...)
		cmd.Env = []string{"PATH=" + binDir, "HOME=" + t.TempDir(), "FERRY_STATE_DIR=" + t.TempDir()}
		if env != "" {
			cmd.Env = append(cmd.Env, env)
		}
		start := time.Now()
		out, code := run(t, cmd, cm)
		return out, code, time.Since(start)
	}
	for _, args := range [][]string{
		{"get", "pods"},                    // ferry's verb
		{"apply", "-f", "-"},               // the apply engine
		{"describe", "pod", "x"},           // kubectl's code
		{"wait", "--for=delete", "pod/x"},  // ferry's verb that waits
		{"rollout", "history", "deploy/x"}, // kubectl's code again
		{"get", "pods", "-w"},              // kubectl's watch
	} {
		out, code, took := run("FERRY_KUBECTL_TIMEOUT=1s", args...)
		if code == 0 || !strings.Contains(out, "did not answer within 1s") || took > 20*time.Second {
			t.Errorf("%v: exit %d after %v:\n%s", args, code, took, out)
		}
	}
	// The default, with no setting at all: 30 s per request; over HTTPS
	// client-go's own 10 s TLS handshake limit comes first.
	out, code, took := run("", "get", "pods")
	if code != 1 || !(strings.Contains(out, "did not answer within 30s") || strings.Contains(out, "TLS handshake timeout")) || took > 75*time.Second {
		t.Errorf("default: exit %d after %v:\n%s", code, took, out)
	}
	// kubectl's own --request-timeout still works, and wins.
	out, code, took = run("", "--request-timeout=2s", "get", "pods")
	if code != 1 || took > 20*time.Second {
		t.Errorf("--request-timeout=2s: exit %d after %v:\n%s", code, took, out)
	}
}
