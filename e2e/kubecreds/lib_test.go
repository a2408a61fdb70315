package kubecreds_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"gitlab.com/ferry-ci/ferry/pkg/failure"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/pkg/kubecreds"
)

// dirState stands in for jobstate.State over a real directory: these tests
// exercise kubecreds on its own; binary_test.go goes through ferry itself.
type dirState struct {
	dir      string
	env      map[string]string
	secrets  []string
	cleanups []string
}

func newDirState(t *testing.T) *dirState {
	return &dirState{dir: filepath.Join(t.TempDir(), "job"), env: map[string]string{}}
}
func (s *dirState) Path(n string) string                  { return filepath.Join(s.dir, n) }
func (s *dirState) AddEnv(k, v string, secret bool) error { s.env[k] = v; return nil }
func (s *dirState) AddSecrets(v ...string) error          { s.secrets = append(s.secrets, v...); return nil }
func (s *dirState) AddCleanupPath(p string) error         { s.cleanups = append(s.cleanups, p); return nil }

type textLog struct{ strings.Builder }

func (l *textLog) Section(name, header string, collapsed bool) func() {
	fmt.Fprintf(l, "section %s\n", header)
	return func() { fmt.Fprintf(l, "end section\n") }
}
func (l *textLog) Infof(f string, a ...any)   { fmt.Fprintf(l, f+"\n", a...) }
func (l *textLog) Noticef(f string, a ...any) { fmt.Fprintf(l, f+"\n", a...) }
func (l *textLog) Warnf(f string, a ...any)   { fmt.Fprintf(l, f+"\n", a...) }

func serverVersion(t *testing.T) string {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(c.AdminRESTConfig())
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	return v.GitVersion
}

func setup(t *testing.T, vars map[string]string, scripts ...string) (*dirState, *textLog, error) {
	t.Helper()
	st, log := newDirState(t), &textLog{}
	opt := kubecreds.DefaultOptions()
	opt.PreflightTimeout = 5 * time.Second
	err := kubecreds.Setup(context.Background(), kubecreds.Input{Vars: vars, Scripts: scripts}, opt, st, log, "/builds/p")
	return st, log, err
}

func TestSATokenKubeconfigBase64(t *testing.T) {
	ctx := context.Background()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	st, log, err := setup(t, map[string]string{"KUBECONFIG": sa.KubeconfigBase64})
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	want := fmt.Sprintf("Kubernetes %s (%s) as system:serviceaccount:example:gitlab-example, namespace example", c.URL, serverVersion(t))
	if !strings.Contains(log.String(), want+"\n") {
		t.Fatalf("log lacks %q:\n%s", want, log)
	}
	if strings.Contains(log.String(), sa.Token) {
		t.Fatal("token in the log")
	}
	// The written kubeconfig works, with the service account's rights.
	path := st.env["KUBECONFIG"]
	if path != st.Path(jobstate.KubeconfigFile) {
		t.Fatalf("KUBECONFIG=%q", path)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig file: %v %v", fi, err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(rc)
	if _, err := cs.CoreV1().ConfigMaps("example").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("list in example: %v", err)
	}
	if _, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list in kube-system: %v, want Forbidden", err)
	}
	for _, s := range []string{sa.Token, sa.KubeconfigBase64} {
		if !contains(st.secrets, s) {
			t.Errorf("secret %.20q... not registered", s)
		}
	}
}

func TestClusterIntegrationVariables(t *testing.T) {
	ctx := context.Background()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, caVar := range []string{"KUBE_CA_PEM_FILE", "KUBE_CA_PEM"} {
		st, log, err := setup(t, map[string]string{
			"KUBE_URL": sa.KubeURL, "KUBE_TOKEN": sa.KubeToken, caVar: sa.KubeCAPEM, "KUBE_NAMESPACE": "example",
		})
		if err != nil {
			t.Fatalf("%s: %v\n%s", caVar, err, log)
		}
		want := fmt.Sprintf("Kubernetes %s (%s) as system:serviceaccount:example:gitlab-example, namespace example", c.URL, serverVersion(t))
		if !strings.Contains(log.String(), want) || !strings.Contains(log.String(), "KUBE_URL/KUBE_TOKEN/"+caVar) {
			t.Fatalf("log:\n%s", log)
		}
		if !contains(st.secrets, sa.KubeToken) {
			t.Error("KUBE_TOKEN not registered as a secret")
		}
	}
}

func TestWrongToken(t *testing.T) {
	sa, err := c.ServiceAccountCredentials(context.Background(), "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(sa.Kubeconfig), sa.Token, "eyJhbGciOiJSUzI1NiJ9.bm90LWEtdG9rZW4.c2ln", 1)
	_, _, err = setup(t, map[string]string{"KUBECONFIG": base64.StdEncoding.EncodeToString([]byte(bad))})
	wantBuild(t, err, "ferry: KUBECONFIG: the API server "+c.URL+" rejected the credentials (401 Unauthorized)")
	_, _, err = setup(t, map[string]string{"KUBE_URL": sa.KubeURL, "KUBE_TOKEN": "wrong-token-0123456789", "KUBE_CA_PEM": sa.KubeCAPEM})
	wantBuild(t, err, "ferry: KUBE_TOKEN: the API server "+c.URL+" rejected the credentials (401 Unauthorized)")
}

func TestUnreachableServer(t *testing.T) {
	sa, err := c.ServiceAccountCredentials(context.Background(), "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + l.Addr().String()
	l.Close()
	_, _, err = setup(t, map[string]string{"KUBE_URL": dead, "KUBE_TOKEN": sa.KubeToken, "KUBE_CA_PEM": sa.KubeCAPEM})
	wantBuild(t, err, "ferry: KUBE_TOKEN: cannot reach the API server "+dead)
}

func TestWrongCA(t *testing.T) {
	sa, err := c.ServiceAccountCredentials(context.Background(), "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile("../../testdata/kubeconfigs/sa-token.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(other)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = setup(t, map[string]string{"KUBE_URL": sa.KubeURL, "KUBE_TOKEN": sa.KubeToken,
		"KUBE_CA_PEM": string(cfg.Clusters["example"].CertificateAuthorityData)})
	wantBuild(t, err, "TLS", "unknown authority")
}

func TestBadBase64AndNotAKubeconfig(t *testing.T) {
	_, _, err := setup(t, map[string]string{"KUBECONFIG": "YXBpVmVyc2lvbjogdjEK!"})
	wantBuild(t, err, "ferry: KUBECONFIG: invalid base64 at byte 21")
	_, _, err = setup(t, map[string]string{"KUBECONFIG": base64.StdEncoding.EncodeToString([]byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"))})
	wantBuild(t, err, "ferry: KUBECONFIG:", "not a kubeconfig")
}

func TestExecPluginRefused(t *testing.T) {
	sa, err := c.ServiceAccountCredentials(context.Background(), "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	cfg, err := clientcmd.Load(sa.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range cfg.AuthInfos {
		u.Token = ""
		u.Exec = &clientcmdapi.ExecConfig{Command: "/bin/sh", Args: []string{"-c", "touch " + marker}, APIVersion: "client.authentication.k8s.io/v1", InteractiveMode: "Never"}
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = setup(t, map[string]string{"KUBECONFIG": base64.StdEncoding.EncodeToString(data)})
	wantBuild(t, err, "exec credential plugin", "--kube-allow-exec")
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the exec plugin ran on the host")
	}
}

func wantBuild(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", parts)
	}
	if !failure.IsBuild(err) {
		t.Errorf("%v: not a build failure", err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q lacks %q", err, p)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
