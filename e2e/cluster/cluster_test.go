package cluster_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
)

var c *cluster.Cluster

func TestMain(m *testing.M) {
	cluster.Main(m, &c, cluster.Options{SimulateRollouts: true, RolloutDelay: 200 * time.Millisecond})
}

// kubectl runs the reference kubectl (ferrybuild.ReferenceKubectl, built
// from the k8s.io/kubectl release ferry links); failing to build it fails.
func kubectl(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	bin, err := ferrybuild.ReferenceKubectl()
	if err != nil {
		t.Fatalf("the reference kubectl: %v", err)
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
	out, err := kubectl(t, path, "create", "deployment", "kubectl-probe", "--image=registry.example.com/app:1", "-n", "example")
	if err != nil || !strings.Contains(out, "deployment.apps/kubectl-probe created") {
		t.Fatalf("kubectl as SA: create deployment in example: %v\n%s", err, out)
	}
	out, err = kubectl(t, path, "get", "deployments", "-n", "example", "-o", "name")
	if err != nil || !strings.Contains(out, "deployment.apps/rbac-probe") || !strings.Contains(out, "deployment.apps/kubectl-probe") {
		t.Fatalf("kubectl as SA: get deployments in example: %v\n%s", err, out)
	}
	out, err = kubectl(t, path, "create", "deployment", "kubectl-probe", "--image=registry.example.com/app:1", "-n", "kube-system")
	if err == nil || !strings.Contains(out, "is forbidden") || !strings.Contains(out, "system:serviceaccount:example:gitlab-example") {
		t.Fatalf("kubectl as SA: create in kube-system: want Forbidden naming the SA, got %v\n%s", err, out)
	}
	// Seed 000's own check.
	out, err = kubectl(t, path, "get", "all", "-n", "kube-system")
	if err == nil || !strings.Contains(out, "Forbidden") {
		t.Fatalf("kubectl as SA: get all -n kube-system: want Forbidden, got %v\n%s", err, out)
	}

	// The token is a real TokenRequest token that outlives a pipeline.
	exp := tokenExpiry(t, sa.Token)
	if left := time.Until(exp); left < time.Hour {
		t.Errorf("SA token expires in %s, want at least 1h", left)
	}
	decoded, err := base64.StdEncoding.DecodeString(sa.KubeconfigBase64)
	if err != nil || !bytes.Equal(decoded, sa.Kubeconfig) {
		t.Errorf("KubeconfigBase64 does not decode to Kubeconfig: %v", err)
	}
	if sa.KubeNamespace != "example" {
		t.Errorf("KubeNamespace = %q, want example", sa.KubeNamespace)
	}
	if sa.KubeURL != c.URL || sa.KubeToken != sa.Token || !strings.Contains(sa.KubeCAPEM, "BEGIN CERTIFICATE") {
		t.Errorf("cluster-integration variables incomplete: %+v", sa)
	}
	if strings.ContainsAny(sa.KubeconfigBase64, "\n ") {
		t.Errorf("base64 kubeconfig is not one line")
	}
}

// tokenExpiry reads the exp claim of a JWT without verifying it (the API
// server verified it when it accepted the token above).
func tokenExpiry(t *testing.T, token string) time.Time {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT (%d parts)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("token payload: %v", err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == 0 {
		t.Fatalf("token claims %s: %v", payload, err)
	}
	return time.Unix(claims.Exp, 0)
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

// Every kind the simulator covers becomes Current for kstatus (what ferry's
// readiness wait uses), and an object annotated never-ready stays
// InProgress.
func TestRolloutSimulation(t *testing.T) {
	ctx := context.Background()
	cs := c.Client()
	ns := "rollouts"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "x"}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/app:1"}}},
	}
	three := int32(3)
	d := deployment("rolls-out", nil)
	d.Spec.Replicas = &three
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment("stuck", map[string]string{cluster.NeverReadyAnnotation: "true"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: appsv1.StatefulSetSpec{
		Replicas: &three, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
	if _, err := cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	jobTmpl := *tmpl.DeepCopy()
	jobTmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "migrate"}, Spec: batchv1.JobSpec{Template: jobTmpl}}
	if _, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dyn, err := dynamic.NewForConfig(c.AdminRESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	objects := []struct {
		gvr  schema.GroupVersionResource
		name string
	}{
		{appsv1.SchemeGroupVersion.WithResource("deployments"), "rolls-out"},
		{appsv1.SchemeGroupVersion.WithResource("statefulsets"), "db"},
		{appsv1.SchemeGroupVersion.WithResource("daemonsets"), "agent"},
		{batchv1.SchemeGroupVersion.WithResource("jobs"), "migrate"},
	}
	kstatus := func(gvr schema.GroupVersionResource, name string) *status.Result {
		t.Helper()
		u, err := dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := status.Compute(u)
		if err != nil {
			t.Fatalf("kstatus %s %s: %v", gvr.Resource, name, err)
		}
		return res
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, o := range objects {
		for {
			res := kstatus(o.gvr, o.name)
			if res.Status == status.CurrentStatus {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s %s never became Current: %s: %s", o.gvr.Resource, o.name, res.Status, res.Message)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	got, err := cs.AppsV1().Deployments(ns).Get(ctx, "rolls-out", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.AvailableReplicas != 3 || !hasAvailable(got) {
		t.Errorf("rolled-out Deployment status: %+v", got.Status)
	}

	// A new generation rolls out again.
	got.Spec.Template.Spec.Containers[0].Image = "registry.example.com/app:2"
	updated, err := cs.AppsV1().Deployments(ns).Update(ctx, got, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "rolls-out", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res := kstatus(objects[0].gvr, "rolls-out")
		if d.Status.ObservedGeneration == updated.Generation && res.Status == status.CurrentStatus {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("updated Deployment (generation %d) never rolled out: observed %d, %s", updated.Generation, d.Status.ObservedGeneration, res.Message)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// By now the simulator has had many polls to touch the never-ready one.
	if res := kstatus(objects[0].gvr, "stuck"); res.Status != status.InProgressStatus {
		t.Errorf("never-ready Deployment: kstatus %s, want InProgress", res.Status)
	}
}

// Without the simulator a test decides when a rollout finishes.
func TestMarkDeploymentAvailable(t *testing.T) {
	ctx := context.Background()
	cs := c.Client()
	d := deployment("marked", map[string]string{cluster.NeverReadyAnnotation: "true"})
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.MarkDeploymentAvailable(ctx, "default", "marked"); err != nil {
		t.Fatal(err)
	}
	got, err := cs.AppsV1().Deployments("default").Get(ctx, "marked", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.ObservedGeneration != got.Generation || got.Status.AvailableReplicas != 1 || !hasAvailable(got) {
		t.Fatalf("status after MarkDeploymentAvailable: %+v", got.Status)
	}
	if err := c.MarkDeploymentAvailable(ctx, "default", "no-such"); !apierrors.IsNotFound(err) {
		t.Fatalf("missing Deployment: want NotFound, got %v", err)
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
// stopping it leaves no listener and nothing in the temp dir. Starting it
// also sweeps a directory left by a dead test binary.
func TestSecondClusterAndCleanStop(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // os.TempDir, hence the harness, writes only here now
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(tmp, "ferry-cluster-stale")
	alive := filepath.Join(tmp, "ferry-cluster-alive")
	staleServer := filepath.Join(tmp, "kubernetes-kube-apiserver-stale")
	stale2 := filepath.Join(tmp, "ferry-cluster-stale2")
	notServer := filepath.Join(tmp, "not-a-server-dir") // named by a stale dir, but not a server's: kept
	for dir, pid := range map[string]int{stale: dead.Process.Pid, stale2: dead.Process.Pid, alive: os.Getppid()} {
		if err := os.MkdirAll(filepath.Join(dir, "etcd"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(pid)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{staleServer, notServer} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(stale, "apiserver.dir"), []byte(staleServer), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale2, "apiserver.dir"), []byte(notServer), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	c2, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		t.Fatalf("second cluster: %v", err)
	}
	if c2.URL == c.URL {
		t.Fatalf("two clusters share %s", c.URL)
	}
	for _, d := range []string{stale, stale2} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("Start did not sweep the directory %s of a dead test binary: %v", d, err)
		}
	}
	if _, err := os.Stat(staleServer); !os.IsNotExist(err) {
		t.Errorf("Start did not sweep the API server directory of a dead test binary: %v", err)
	}
	if _, err := os.Stat(alive); err != nil {
		t.Errorf("Start removed the directory of a live process: %v", err)
	}
	if _, err := os.Stat(notServer); err != nil {
		t.Errorf("Start removed a directory it did not make: %v", err)
	}
	if _, err := c2.Client().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("second cluster does not answer: %v", err)
	}
	if _, err := c.Client().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("first cluster stopped answering while the second runs: %v", err)
	}
	u, _ := url.Parse(c2.URL)
	addrs := append([]string{u.Host}, cluster.EtcdAddrs(c2)...)
	for _, a := range addrs {
		conn, err := net.DialTimeout("tcp", a, time.Second)
		if err != nil {
			t.Fatalf("%s does not listen while the cluster runs: %v", a, err)
		}
		conn.Close()
	}
	if err := c2.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, a := range addrs {
		if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Stop", a)
		}
	}
	for _, d := range []string{alive, notServer} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left in the temp dir after Stop: %s", e.Name())
	}
	if err := c2.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := c.Client().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("first cluster stopped answering after the second stopped: %v", err)
	}
}

// BenchmarkStartStop measures what one more cluster costs a test package.
func BenchmarkStartStop(b *testing.B) {
	for b.Loop() {
		c2, err := cluster.Start(context.Background(), cluster.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := c2.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}
