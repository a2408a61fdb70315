package cluster_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
)

var c *cluster.Cluster

func TestMain(m *testing.M) {
	cluster.Main(m, &c, cluster.Options{SimulateRollouts: true, RolloutDelay: 200 * time.Millisecond})
}

// kubectl finds the real kubectl; `make test` installs Debian's
// kubernetes-client when it is missing, so its absence is a failure.
func kubectl(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl not on PATH: run `make tools` (installs Debian's kubernetes-client): %v", err)
	}
	cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestAdminKubeconfigWorksWithKubectl(t *testing.T) {
	out, err := kubectl(t, c.AdminKubeconfigPath, "get", "namespaces", "-o", "name")
	if err != nil {
		t.Fatalf("kubectl get namespaces: %v\n%s", err, out)
	}
	for _, ns := range []string{"namespace/default", "namespace/kube-system"} {
		if !strings.Contains(out, ns) {
			t.Errorf("kubectl get namespaces lacks %s:\n%s", ns, out)
		}
	}
	cfg, err := clientcmd.LoadFromFile(c.AdminKubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, cl := range cfg.Clusters {
		if cl.InsecureSkipTLSVerify || len(cl.CertificateAuthorityData) == 0 {
			t.Errorf("cluster %s in the admin kubeconfig does not verify TLS", name)
		}
	}
}

func saCredentials(t *testing.T) *cluster.Credentials {
	t.Helper()
	sa, err := c.ServiceAccountCredentials(context.Background(), "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

func TestServiceAccountIsAdminOfItsNamespaceOnly(t *testing.T) {
	sa := saCredentials(t)
	cfg, err := clientcmd.RESTConfigFromKubeConfig(sa.Kubeconfig)
	if err != nil {
		t.Fatalf("SA kubeconfig does not load: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := deployment("rbac-probe", nil)
	if _, err := cs.AppsV1().Deployments("example").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("SA cannot create a Deployment in its namespace: %v", err)
	}
	_, err = cs.AppsV1().Deployments("kube-system").Create(ctx, deployment("rbac-probe", nil), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("SA creating in kube-system: want Forbidden, got %v", err)
	}

	path := filepath.Join(t.TempDir(), "sa.kubeconfig")
	if err := os.WriteFile(path, sa.Kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := kubectl(t, path, "get", "deployments", "-n", "example", "-o", "name")
	if err != nil || !strings.Contains(out, "deployment.apps/rbac-probe") {
		t.Fatalf("kubectl as SA in example: %v\n%s", err, out)
	}
	out, err = kubectl(t, path, "get", "pods", "-n", "kube-system")
	if err == nil || !strings.Contains(out, "Forbidden") || !strings.Contains(out, "system:serviceaccount:example:gitlab-example") {
		t.Fatalf("kubectl as SA in kube-system: want Forbidden naming the SA, got %v\n%s", err, out)
	}
	if sa.KubeURL != c.URL || sa.KubeToken != sa.Token || !strings.Contains(sa.KubeCAPEM, "BEGIN CERTIFICATE") {
		t.Errorf("cluster-integration variables incomplete: %+v", sa)
	}
	if strings.ContainsAny(sa.KubeconfigBase64, "\n ") {
		t.Errorf("base64 kubeconfig is not one line")
	}
}

func deployment(name string, annotations map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/app:1"}}},
			},
		},
	}
}

func TestRolloutSimulation(t *testing.T) {
	ctx := context.Background()
	cs := c.Client()
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, deployment("rolls-out", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, deployment("stuck", map[string]string{cluster.NeverReadyAnnotation: "true"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "rolls-out", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.AvailableReplicas == 1 && d.Status.ObservedGeneration == d.Generation && hasAvailable(d) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Deployment never became Available: %+v", d.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stuck, err := cs.AppsV1().Deployments("default").Get(ctx, "stuck", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if stuck.Status.AvailableReplicas != 0 || hasAvailable(stuck) {
		t.Fatalf("a never-ready Deployment got a ready status: %+v", stuck.Status)
	}
}

func hasAvailable(d *appsv1.Deployment) bool {
	for _, cond := range d.Status.Conditions {
		if cond.Type == appsv1.DeploymentAvailable && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// A second cluster in the same binary gets its own ports and directory, and
// stopping it leaves neither a listener nor a temp dir behind.
func TestSecondClusterAndCleanStop(t *testing.T) {
	ctx := context.Background()
	c2, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		t.Fatalf("second cluster: %v", err)
	}
	if c2.URL == c.URL {
		t.Fatalf("two clusters share %s", c.URL)
	}
	if _, err := c2.Client().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("second cluster does not answer: %v", err)
	}
	if _, err := c.Client().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("first cluster stopped answering while the second runs: %v", err)
	}
	u, _ := url.Parse(c2.URL)
	dir := c2.Dir
	if err := c2.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster dir %s still exists after Stop: %v", dir, err)
	}
	if conn, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Stop", u.Host)
	}
	if err := c2.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}
