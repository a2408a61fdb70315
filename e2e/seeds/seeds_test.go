package seeds_test

import (
	"context"
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/e2e/seeds"
	rd "gitlab.com/ferry-ci/ferry/pkg/runnerdriver"
)

var (
	c     *cluster.Cluster
	ferry string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-seeds-bin-")
	if err != nil {
		panic(err)
	}
	ferry, err = seeds.BuildFerry(dir)
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cluster.Main(m, &c, cluster.Options{SimulateRollouts: true})
}

// run runs a pipeline through a fresh driver and returns it with its base dir.
func run(t *testing.T, p rd.Pipeline) (*rd.PipelineResult, string) {
	t.Helper()
	base := t.TempDir()
	d, err := seeds.NewDriver(ferry, base)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return d.RunPipeline(ctx, p), base
}

func requireSuccess(t *testing.T, r *rd.JobResult) {
	t.Helper()
	if r == nil || r.Status != rd.StatusSuccess {
		if r == nil {
			t.Fatal("job did not run")
		}
		t.Fatalf("job %s: %s (%s %s)\n%s\n--- system log ---\n%s", r.Name, r.Status, r.FailureReason, r.Error, rd.StripANSI(r.Log), r.SystemLog)
	}
}

// secretForms are the planted secret and the encodings a leak could take.
func secretForms(secrets ...string) []string {
	var out []string
	for _, s := range secrets {
		out = append(out, s,
			base64.StdEncoding.EncodeToString([]byte(s)),
			base64.RawStdEncoding.EncodeToString([]byte(s)),
			base64.URLEncoding.EncodeToString([]byte(s)))
	}
	return out
}

// assertNoSecrets scans every job log (and the runner's system log) and every
// file left under the builds and state directories after cleanup.
func assertNoSecrets(t *testing.T, pr *rd.PipelineResult, base string, secrets ...string) {
	t.Helper()
	forms := secretForms(secrets...)
	for name, j := range pr.Jobs {
		for _, f := range forms {
			if strings.Contains(j.Log, f) || strings.Contains(j.SystemLog, f) {
				t.Errorf("job %s: a secret (%d chars) is in the log", name, len(f))
			}
		}
	}
	var dirs []string
	for _, j := range pr.Jobs {
		if j.BuildsDir != "" {
			dirs = append(dirs, j.BuildsDir)
		}
	}
	dirs = append(dirs, seeds.StateDir(base))
	for _, dir := range dirs {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			for _, f := range forms {
				if strings.Contains(string(data), f) {
					t.Errorf("a secret (%d chars) stays on disk after cleanup in %s", len(f), path)
				}
			}
			return nil
		})
	}
}

func deploymentImage(t *testing.T, ns, name string) string {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(c.AdminRESTConfig())
	d, err := dyn.Resource(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}).
		Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("deployment %s/%s: %v", ns, name, err)
	}
	cs, _, _ := unstructuredContainers(d.Object)
	if len(cs) == 0 {
		t.Fatalf("deployment %s/%s has no containers", ns, name)
	}
	return cs[0]
}

func unstructuredContainers(obj map[string]any) ([]string, bool, error) {
	spec, _ := obj["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	pspec, _ := tmpl["spec"].(map[string]any)
	list, _ := pspec["containers"].([]any)
	var images []string
	for _, c := range list {
		if m, ok := c.(map[string]any); ok {
			images = append(images, m["image"].(string))
		}
	}
	return images, true, nil
}

func requireLog(t *testing.T, j *rd.JobResult, want ...string) {
	t.Helper()
	log := rd.StripANSI(j.Log)
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("job %s: log lacks %q:\n%s", j.Name, w, log)
		}
	}
}

func seed000(t *testing.T, p rd.Pipeline, sa *cluster.Credentials) *rd.PipelineResult {
	t.Helper()
	pr, base := run(t, p)
	requireSuccess(t, pr.Jobs["docker"])
	kube := pr.Jobs["kube"]
	requireSuccess(t, kube)
	if got := deploymentImage(t, "example", "shark-app"); got != seeds.Image {
		t.Errorf("deployed image %q, want the dotenv's %q", got, seeds.Image)
	}
	requireLog(t, kube,
		"dotenv: IMAGE from docker",
		"as system:serviceaccount:example:gitlab-example",
		"deployment.apps/shark-app ")
	if !strings.Contains(kube.Log, "section_start:") {
		t.Errorf("no collapsible sections in the job log")
	}
	rbac := pr.Jobs["rbac-check"]
	if rbac == nil || rbac.Status != rd.StatusFailed || !rbac.AllowedFailure {
		t.Fatalf("rbac-check: want an allowed failure, got %+v", rbac)
	}
	requireLog(t, rbac, `Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:example:gitlab-example" cannot list resource "pods" in API group "" in the namespace "kube-system"`)
	if rbac.ScriptExitCode != 1 {
		t.Errorf("rbac-check exit code %d, want kubectl's 1", rbac.ScriptExitCode)
	}
	assertNoSecrets(t, pr, base, sa.Token, sa.KubeconfigBase64, string(sa.Kubeconfig))
	if _, err := os.Stat(filepath.Join(kube.ProjectDir, "kubeconfig")); !os.IsNotExist(err) {
		t.Errorf("the decoded kubeconfig is still in the project dir after cleanup: %v", err)
	}
	return pr
}

// Seed 000 as its author wrote it runs unchanged: ferry leaves the decoding
// to the script, masks what it decodes, removes the decoded copy.
func TestSeed000AsWritten(t *testing.T) {
	sa, err := c.ServiceAccountCredentials(context.Background(), "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	pr := seed000(t, seeds.Seed000Original(sa), sa)
	requireLog(t, pr.Jobs["kube"], "echo $KUBECONFIG | base64 --decode > kubeconfig")
}

// Seed 000 the ferry way: no decode lines, no sed.
func TestSeed000FerryWay(t *testing.T) {
	sa, err := c.ServiceAccountCredentials(context.Background(), "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	seed000(t, seeds.Seed000Ferry(sa), sa)
}

// Seed 003: cluster-integration variables, kubectl config set-*, a sed
// template and a whole directory.
func TestSeed003(t *testing.T) {
	sa, err := c.ServiceAccountCredentials(context.Background(), "shark", "gitlab-deploy", "admin")
	if err != nil {
		t.Fatal(err)
	}
	pr, base := run(t, seeds.Seed003(sa))
	j := pr.Jobs["deployment"]
	requireSuccess(t, j)
	requireLog(t, j, `Cluster "k8s" set.`, `Switched to context "default".`,
		"deployment.apps/shark-app created", "service/shark-app created")
	img := deploymentImage(t, "shark", "shark-app")
	if !strings.HasSuffix(img, ":90eedc043e20c0a6b73a8985d50e4aa89f8844aa") && !strings.Contains(img, ":") {
		t.Errorf("template not rendered with the commit: %q", img)
	}
	if strings.Contains(img, "GIT_COMMIT") {
		t.Errorf("template placeholder left in the deployed image: %q", img)
	}
	svc, err := c.Client().CoreV1().Services("shark").Get(context.Background(), "shark-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(svc.Spec.Type) != "NodePort" || svc.Spec.Ports[0].NodePort != 30000 {
		t.Errorf("service: %s %+v", svc.Spec.Type, svc.Spec.Ports)
	}
	assertNoSecrets(t, pr, base, sa.Token)
}

// Seed 001: a custom resource before its CRD, a namespace, RBAC and an app
// in one `kubectl apply -f dir`.
func TestSeed001(t *testing.T) {
	admin, err := os.ReadFile(c.AdminKubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	pr, base := run(t, seeds.Seed001(base64.StdEncoding.EncodeToString(admin)))
	j := pr.Jobs["install"]
	requireSuccess(t, j)
	requireLog(t, j,
		"customresourcedefinition.apiextensions.k8s.io/issuers.cert-manager.io created",
		"namespace/traefik created",
		"issuer.cert-manager.io/letsencrypt-staging created",
		"clusterrole.rbac.authorization.k8s.io/traefik-ingress-controller created",
		"deployment.apps/traefik created", "service/whoami created", "configmap/traefik-config created")
	dyn := dynamic.NewForConfigOrDie(c.AdminRESTConfig())
	ctx := context.Background()
	for _, o := range []struct {
		gvr      schema.GroupVersionResource
		ns, name string
	}{
		{schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}, "traefik", "letsencrypt-staging"},
		{schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, "traefik", "traefik-ingress-controller"},
		{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, "", "traefik-ingress-controller"},
		{schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "traefik", "traefik-config"},
		{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "traefik", "traefik"},
		{schema.GroupVersionResource{Version: "v1", Resource: "services"}, "default", "whoami"},
	} {
		var err error
		if o.ns == "" {
			_, err = dyn.Resource(o.gvr).Get(ctx, o.name, metav1.GetOptions{})
		} else {
			_, err = dyn.Resource(o.gvr).Namespace(o.ns).Get(ctx, o.name, metav1.GetOptions{})
		}
		if err != nil {
			t.Errorf("%s %s/%s: %v", o.gvr.Resource, o.ns, o.name, err)
		}
	}
	var adminToken string
	for _, line := range strings.Split(string(admin), "\n") {
		if s := strings.TrimSpace(line); strings.HasPrefix(s, "token: ") {
			adminToken = strings.TrimPrefix(s, "token: ")
		}
	}
	if adminToken == "" {
		t.Fatal("no token in the admin kubeconfig")
	}
	assertNoSecrets(t, pr, base, adminToken)
}
