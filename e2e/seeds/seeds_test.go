package seeds_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/e2e/seeds"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	rd "gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

var (
	c     *cluster.Cluster
	ferry string
)

func TestMain(m *testing.M) {
	// Shared: cluster.Main removes it (os.Exit skips deferred calls).
	var err error
	if ferry, err = ferrybuild.Shared(); err != nil {
		panic(err)
	}
	cluster.Main(m, &c, cluster.Options{SimulateRollouts: true})
}

// run runs a pipeline through a fresh driver (a fresh runner host: builds,
// state, artifacts and HOME all under base) and returns it with base.
func run(t *testing.T, p rd.Pipeline, err error) (*rd.PipelineResult, string) {
	t.Helper()
	if err != nil {
		t.Fatalf("loading the seed: %v", err)
	}
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
	if r == nil {
		t.Fatal("job did not run")
	}
	if r.Status != rd.StatusSuccess {
		t.Fatalf("job %s: %s (%s %s)\n%s\n--- system log ---\n%s", r.Name, r.Status, r.FailureReason, r.Error, rd.StripANSI(r.Log), r.SystemLog)
	}
	for _, call := range r.Calls {
		if call.ExitCode != 0 {
			t.Errorf("job %s: %s %s exited %d", r.Name, call.Kind, call.Stage, call.ExitCode)
		}
	}
}

// requireLog checks the job log as GitLab stores it: a step_script section
// (collapsible in GitLab's UI) and each wanted line, in the given order.
func requireLog(t *testing.T, j *rd.JobResult, want ...string) {
	t.Helper()
	if !strings.Contains(j.Log, "section_start:") || !strings.Contains(j.Log, ":step_script\r") ||
		!strings.Contains(j.Log, "section_end:") {
		t.Errorf("job %s: no step_script section in the log", j.Name)
	}
	log := rd.StripANSI(j.Log)
	rest := log
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			if strings.Contains(log, w) {
				t.Errorf("job %s: %q is in the log but out of order:\n%s", j.Name, w, log)
			} else {
				t.Errorf("job %s: log lacks %q:\n%s", j.Name, w, log)
			}
			continue
		}
		rest = rest[i+len(w):]
	}
}

// payloadVar is a variable of the job's JOB_RESPONSE_FILE (what GitLab sent).
func payloadVar(t *testing.T, j *rd.JobResult, key string) string {
	t.Helper()
	var p struct {
		Variables []struct{ Key, Value string } `json:"variables"`
	}
	if err := json.Unmarshal(j.PayloadJSON, &p); err != nil {
		t.Fatalf("job %s payload: %v", j.Name, err)
	}
	for _, v := range p.Variables {
		if v.Key == key {
			return v.Value
		}
	}
	t.Fatalf("job %s: no %s in its payload", j.Name, key)
	return ""
}

// secretForms are the planted secret and the encodings a leak could take.
func secretForms(secrets ...string) []string {
	var out []string
	for _, s := range secrets {
		out = append(out, s,
			base64.StdEncoding.EncodeToString([]byte(s)),
			base64.RawStdEncoding.EncodeToString([]byte(s)),
			base64.URLEncoding.EncodeToString([]byte(s)),
			base64.RawURLEncoding.EncodeToString([]byte(s)))
	}
	return out
}

// assertNoSecrets scans every job log, the runner's system log, and every
// file left on the runner host after the pipeline: the builds dirs, ferry's
// state dir, HOME, the artifact store, all under base. It also requires that
// the scan saw the projects' manifests, so an empty walk cannot pass.
func assertNoSecrets(t *testing.T, pr *rd.PipelineResult, base, manifest string, secrets ...string) {
	t.Helper()
	forms := secretForms(secrets...)
	for name, j := range pr.Jobs {
		for _, f := range forms {
			if strings.Contains(j.Log, f) || strings.Contains(j.SystemLog, f) {
				t.Errorf("job %s: a secret (%d chars) is in the log", name, len(f))
			}
		}
	}
	files, sawManifest := 0, false
	err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if filepath.Base(path) == manifest {
			sawManifest = true
		}
		for _, f := range forms {
			if strings.Contains(string(data), f) {
				t.Errorf("a secret (%d chars) stays on disk after cleanup in %s", len(f), path)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("scanning %s: %v", base, err)
	}
	if !sawManifest {
		t.Errorf("the scan of %s (%d files) never saw %s: it proves nothing", base, files, manifest)
	}
	// ferry keeps a job's state only while the job runs.
	jobs, _ := os.ReadDir(filepath.Join(seeds.StateDir(base), "jobs"))
	for _, e := range jobs {
		t.Errorf("job state dir left after cleanup: %s", e.Name())
	}
}

func deploymentImage(t *testing.T, ns, name string) string {
	t.Helper()
	d, err := c.Client().AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("deployment %s/%s: %v", ns, name, err)
	}
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("deployment %s/%s has %d containers", ns, name, len(cs))
	}
	return cs[0].Image
}

// deleteApp removes shark-app's Deployment and Service from ns, so that a
// test sees `created` (and the Service's nodePort 30000 is free again).
func deleteApp(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	if err := c.Client().AppsV1().Deployments(ns).Delete(ctx, "shark-app", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := c.Client().CoreV1().Services(ns).Delete(ctx, "shark-app", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

const forbidden = `Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:example:gitlab-example" cannot list resource "pods" in API group "" in the namespace "kube-system"`

func seed000(t *testing.T, version string) (*rd.PipelineResult, *rd.JobResult) {
	t.Helper()
	ctx := context.Background()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	deleteApp(t, "example")
	p, err := seeds.Seed000(version, sa)
	pr, base := run(t, p, err)
	docker := pr.Jobs["docker"]
	requireSuccess(t, docker)
	kube := pr.Jobs["kube"]
	requireSuccess(t, kube)

	// The image the docker job computed from GitLab's variables, carried by
	// the dotenv report: nothing in the test or ferry writes it.
	want := fmt.Sprintf("registry.example.com/%s:%s-%s-%d", seeds.Seed000ProjectPath,
		payloadVar(t, docker, "CI_COMMIT_SHORT_SHA"), payloadVar(t, docker, "CI_PIPELINE_ID"), docker.ID)
	if got := deploymentImage(t, "example", "shark-app"); got != want {
		t.Errorf("deployed image %q, want the dotenv's %q", got, want)
	}
	requireLog(t, kube,
		"dotenv: IMAGE from docker",
		"as system:serviceaccount:example:gitlab-example, namespace example",
		"deployment.apps/shark-app created",
		"Job succeeded")

	rbac := pr.Jobs["rbac-check"]
	if rbac == nil || rbac.Status != rd.StatusFailed || !rbac.AllowedFailure || rbac.FailureReason != rd.ReasonScriptFailure {
		t.Fatalf("rbac-check: want an allowed script failure, got %+v", rbac)
	}
	requireLog(t, rbac, "$ kubectl get all -n kube-system", forbidden, "ERROR: Job failed: exit code 1")
	if rbac.ScriptExitCode != 1 {
		t.Errorf("rbac-check exit code %d, want kubectl's 1", rbac.ScriptExitCode)
	}
	if pr.Status != rd.StatusSuccess {
		t.Errorf("pipeline %s, want success (rbac-check may fail)", pr.Status)
	}

	assertNoSecrets(t, pr, base, "deployment.yml", sa.Token, sa.KubeconfigBase64, string(sa.Kubeconfig))
	if _, err := os.Stat(filepath.Join(kube.ProjectDir, "kubeconfig")); !os.IsNotExist(err) {
		t.Errorf("the decoded kubeconfig is still in the project dir after cleanup: %v", err)
	}
	return pr, kube
}

// Seed 000 as its author wrote it runs unchanged: the script decodes the
// variable into the build dir itself; ferry masks what it decodes, removes
// the decoded copy at cleanup and names the lines that can go.
func TestSeed000AsWritten(t *testing.T) {
	_, kube := seed000(t, "before")
	requireLog(t, kube,
		"$ echo $KUBECONFIG | base64 --decode > kubeconfig",
		"$ export KUBECONFIG=`pwd`/kubeconfig",
		`$ sed -i -e "s|IMAGE|${IMAGE}|g" deployment.yml`,
		"$ kubectl apply -f deployment.yml",
		"deployment.apps/shark-app created")
	if !strings.Contains(rd.StripANSI(kube.Log), "can be deleted") {
		t.Errorf("ferry does not name the decode lines that can go:\n%s", rd.StripANSI(kube.Log))
	}
}

// Seed 000 the ferry way: no decode lines, no sed; the project's manifest is
// left as committed.
func TestSeed000FerryWay(t *testing.T) {
	_, kube := seed000(t, "ferry")
	requireLog(t, kube, "$ kubectl apply --envsubst -f deployment.yml", "deployment.apps/shark-app created")
	data, err := os.ReadFile(filepath.Join(kube.ProjectDir, "deployment.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "image: ${IMAGE}") {
		t.Errorf("deployment.yml was rewritten in the project dir:\n%s", data)
	}
}

// seed003 checks what both versions of seed 003 leave: the Deployment runs
// the commit's image, the NodePort Service, kubectl's lines, no token.
func seed003(t *testing.T, version, ns string, logLines ...string) *rd.JobResult {
	t.Helper()
	sa, err := c.ServiceAccountCredentials(context.Background(), ns, "gitlab-deploy", "admin")
	if err != nil {
		t.Fatal(err)
	}
	deleteApp(t, ns)
	t.Cleanup(func() { deleteApp(t, ns) }) // frees nodePort 30000 for the other version
	p, err := seeds.Seed003(version, sa)
	pr, base := run(t, p, err)
	j := pr.Jobs["deployment"]
	requireSuccess(t, j)
	requireLog(t, j, append(logLines, "deployment.apps/shark-app created", "service/shark-app created", "Job succeeded")...)
	want := "registry.example.com/samiamoura/shark-application:" + payloadVar(t, j, "CI_COMMIT_SHA")
	if img := deploymentImage(t, ns, "shark-app"); img != want {
		t.Errorf("deployed image %q, want %q", img, want)
	}
	svc, err := c.Client().CoreV1().Services(ns).Get(context.Background(), "shark-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(svc.Spec.Type) != "NodePort" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].NodePort != 30000 || svc.Spec.Ports[0].Port != 80 {
		t.Errorf("service: %s %+v", svc.Spec.Type, svc.Spec.Ports)
	}
	assertNoSecrets(t, pr, base, "service.yml", sa.Token)
	// kubectl config set-* wrote the job's private kubeconfig, not the runner
	// user's ~/.kube/config that every job on the host shares.
	if _, err := os.Stat(filepath.Join(base, "home", ".kube")); !os.IsNotExist(err) {
		t.Errorf("the job wrote into the runner user's ~/.kube: %v", err)
	}
	return j
}

// Seed 003 as its author wrote it: cluster-integration variables, kubectl
// config set-*, a sed template kept in the applied directory.
func TestSeed003AsWritten(t *testing.T) {
	seed003(t, "before", "default",
		`$ kubectl config set-cluster my-cluster --server=${KUBE_URL} --certificate-authority="${KUBE_CA_PEM_FILE}"`,
		`Cluster "my-cluster" set.`,
		`User "admin" set.`,
		`Context "my-context" created.`,
		`Switched to context "my-context".`,
		`$ kubectl apply -f kubernetes`)
}

// Seed 003 the ferry way: no kubectl config lines, no template.
func TestSeed003FerryWay(t *testing.T) {
	j := seed003(t, "ferry", "shark",
		"as system:serviceaccount:shark:gitlab-deploy, namespace shark",
		"$ kubectl apply --envsubst -f kubernetes")
	if strings.Contains(rd.StripANSI(j.Log), "kubectl config") {
		t.Errorf("the ferry way still configures kubectl:\n%s", rd.StripANSI(j.Log))
	}
}

// Seed 001: a custom resource before its CRD and namespace, RBAC and an app
// across namespaces, in one `kubectl apply -f dir` with admin credentials.
func TestSeed001(t *testing.T) {
	admin, adminB64 := adminKubeconfig(t)
	var adminToken string
	for _, line := range strings.Split(string(admin), "\n") {
		if s := strings.TrimSpace(line); strings.HasPrefix(s, "token: ") {
			adminToken = strings.TrimPrefix(s, "token: ")
		}
	}
	if adminToken == "" {
		t.Fatal("no token in the admin kubeconfig")
	}
	p, err := seeds.Seed001(adminB64)
	pr, base := run(t, p, err)
	j := pr.Jobs["install"]
	requireSuccess(t, j)
	// CRDs and namespaces first, then the rest; each line once.
	requireLog(t, j,
		"$ kubectl apply --validate=false -f k8s",
		"customresourcedefinition.apiextensions.k8s.io/issuers.cert-manager.io created",
		"namespace/traefik created")
	requireLog(t, j,
		"issuer.cert-manager.io/letsencrypt-staging created",
		"serviceaccount/traefik-ingress-controller created",
		"clusterrole.rbac.authorization.k8s.io/traefik-ingress-controller created",
		"clusterrolebinding.rbac.authorization.k8s.io/traefik-ingress-controller created",
		"configmap/traefik-config created",
		"deployment.apps/traefik created",
		"service/traefik created",
		"service/whoami created")
	requireLog(t, j, "Job succeeded")
	if strings.Contains(rd.StripANSI(j.Log), "no matches for kind") {
		t.Errorf("the Issuer was tried before its CRD was served:\n%s", rd.StripANSI(j.Log))
	}

	dyn := dynamic.NewForConfigOrDie(c.AdminRESTConfig())
	ctx := context.Background()
	for _, o := range []struct {
		gvr      schema.GroupVersionResource
		ns, name string
	}{
		{schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}, "", "issuers.cert-manager.io"},
		{schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, "", "traefik"},
		{schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}, "traefik", "letsencrypt-staging"},
		{schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, "traefik", "traefik-ingress-controller"},
		{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}, "", "traefik-ingress-controller"},
		{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, "", "traefik-ingress-controller"},
		{schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "traefik", "traefik-config"},
		{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "traefik", "traefik"},
		{schema.GroupVersionResource{Version: "v1", Resource: "services"}, "traefik", "traefik"},
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
	issuer, err := dyn.Resource(schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}).
		Namespace("traefik").Get(ctx, "letsencrypt-staging", metav1.GetOptions{})
	if err != nil {
		t.Errorf("issuer: %v", err)
	} else {
		if email, _, _ := unstructured.NestedString(issuer.Object, "spec", "acme", "email"); email != "ops@example.com" {
			t.Errorf("issuer spec.acme.email %q", email)
		}
	}
	assertNoSecrets(t, pr, base, "00-issuer.yml", adminToken, adminB64, string(admin))
}
