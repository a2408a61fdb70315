package seeds_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"gitlab.com/ferry-ci/ferry/e2e/seeds"
	"gitlab.com/ferry-ci/ferry/internal/proctest"
	rd "gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// runNoKubectl runs a pipeline like run, with a trap first on the host's
// PATH: a `kubectl` that records being called and fails. Ferry's own
// kubectl (the job's bin dir comes before it) must never reach another.
func runNoKubectl(t *testing.T, p rd.Pipeline, err error) (*rd.PipelineResult, string) {
	t.Helper()
	if err != nil {
		t.Fatalf("loading the seed: %v", err)
	}
	base := t.TempDir()
	trap := filepath.Join(base, "trap")
	called := filepath.Join(base, "trap-called")
	os.MkdirAll(trap, 0o755)
	os.WriteFile(filepath.Join(trap, "kubectl"), []byte("#!/bin/sh\necho \"$@\" >> "+called+"\necho 'a real kubectl was called' >&2\nexit 99\n"), 0o755)
	d, err := seeds.NewDriverPath(ferry, base, trap+":"+os.Getenv("PATH"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pr := d.RunPipeline(ctx, p)
	if b, err := os.ReadFile(called); err == nil {
		t.Errorf("ferry's kubectl ran another kubectl: %s", b)
	}
	return pr, base
}

func adminKubeconfig(t *testing.T) (raw []byte, b64 string) {
	t.Helper()
	admin, err := os.ReadFile(c.AdminKubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	return admin, base64.StdEncoding.EncodeToString(admin)
}

var (
	certGVR    = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}
	ingressGVR = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}
	ksGVR      = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
)

// ingressShim does what cert-manager's ingress-shim does for seed 001: for
// an Ingress annotated cert-manager.io/issuer, a Certificate named after
// its TLS secret, Ready once issued.
func ingressShim(ctx context.Context, t *testing.T, dyn dynamic.Interface, ns string) {
	for ctx.Err() == nil {
		ing, err := dyn.Resource(ingressGVR).Namespace(ns).Get(ctx, "traefik-web-ui", metav1.GetOptions{})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		issuer := ing.GetAnnotations()["cert-manager.io/issuer"]
		cert := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
			"metadata": map[string]any{"name": "traefik-cert", "namespace": ns},
			"spec": map[string]any{"secretName": "traefik-cert", "dnsNames": []any{"traefik.k8s.example.com"},
				"issuerRef": map[string]any{"name": issuer, "kind": "Issuer"}},
		}}
		got, err := dyn.Resource(certGVR).Namespace(ns).Create(ctx, cert, metav1.CreateOptions{})
		if err != nil {
			t.Errorf("ingress-shim: %v", err)
			return
		}
		unstructured.SetNestedSlice(got.Object, []any{map[string]any{
			"type": "Ready", "status": "True", "reason": "Ready", "message": "Certificate is up to date and has not expired",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}, "status", "conditions")
		if _, err := dyn.Resource(certGVR).Namespace(ns).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			t.Errorf("ingress-shim status: %v", err)
		}
		return
	}
}

// Seed 001 as its author wrote it, end to end through a runner and ferry,
// with no kubectl on the host: apply --validate=false -f URL, create
// namespace, create -n NS -f issuer.yml, create -f dir, describe certificate.
func TestSeed001AsWritten(t *testing.T) {
	crds, err := os.ReadFile(seeds.Seed001CRDs())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(crds) }))
	defer srv.Close()
	dyn := dynamic.NewForConfigOrDie(c.AdminRESTConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The other version of seed 001 (same cluster) makes the same
	// cluster-wide RBAC objects; this one creates them, as the author did.
	rbac := func() {
		// Its own context: t.Cleanup runs it after ctx is cancelled.
		rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
		defer rcancel()
		for _, r := range []string{"clusterroles", "clusterrolebindings"} {
			err := dyn.Resource(schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: r}).
				Delete(rctx, "traefik-ingress-controller", metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	rbac()
	t.Cleanup(rbac)
	go ingressShim(ctx, t, dyn, "ingress")

	raw, b64 := adminKubeconfig(t)
	p, err := seeds.Seed001AsWritten(b64, srv.URL+"/cert-manager/release-0.11/deploy/manifests/00-crds.yaml")
	pr, base := runNoKubectl(t, p, err)
	j := pr.Jobs["install"]
	requireSuccess(t, j)
	requireLog(t, j,
		"customresourcedefinition.apiextensions.k8s.io/certificates.cert-manager.io created",
		"customresourcedefinition.apiextensions.k8s.io/issuers.cert-manager.io ", // created, or configured after the other version
		"namespace/cert-manager created",
		"namespace/ingress created",
		`Context "`, `" modified.`,
		"issuer.cert-manager.io/letsencrypt-prod created",
		"serviceaccount/traefik-ingress-controller created",
		"clusterrole.rbac.authorization.k8s.io/traefik-ingress-controller created",
		"deployment.apps/traefik-ingress-controller created",
		"ingress.networking.k8s.io/traefik-web-ui created",
		"certificate.cert-manager.io/traefik-cert condition met",
		"Job succeeded")
	// kubectl describe's own layout for a custom resource.
	requireLog(t, j,
		"$ kubectl describe certificate traefik-cert",
		"Name:         traefik-cert",
		"Namespace:    ingress",
		"API Version:  cert-manager.io/v1",
		"Kind:         Certificate",
		"Secret Name:  traefik-cert",
		"Message:               Certificate is up to date and has not expired",
		"Events:                    <none>")
	iss, err := dyn.Resource(schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}).
		Namespace("ingress").Get(ctx, "letsencrypt-prod", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the Issuer: %v", err)
	}
	if email, _, _ := unstructured.NestedString(iss.Object, "spec", "acme", "email"); email != "user@example.com" {
		t.Errorf("issuer spec.acme.email %q", email)
	}
	assertNoSecrets(t, pr, base, "issuer.yml", string(raw), b64)
}

// fluxController plays kustomize-controller for seed 003's pull half: a
// new reconcile.fluxcd.io/requestedAt is handled after a second, and the
// Kustomization becomes Ready then (it is not Ready before).
func fluxController(ctx context.Context, t *testing.T, dyn dynamic.Interface, handled chan<- time.Time) {
	ks := dyn.Resource(ksGVR).Namespace("flux-system")
	for ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		o, err := ks.Get(ctx, "shark-app", metav1.GetOptions{})
		if err != nil {
			continue
		}
		req := o.GetAnnotations()["reconcile.fluxcd.io/requestedAt"]
		last, _, _ := unstructured.NestedString(o.Object, "status", "lastHandledReconcileAt")
		if req == "" || req == last {
			continue
		}
		time.Sleep(time.Second) // the reconciliation
		unstructured.SetNestedField(o.Object, req, "status", "lastHandledReconcileAt")
		unstructured.SetNestedSlice(o.Object, []any{map[string]any{
			"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "observedGeneration": o.GetGeneration(),
			"message":            "Applied revision: main@sha1:4e1243bd22c66e76c2ba9eddc1f91394e57f9f83",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}, "status", "conditions")
		if _, err := ks.UpdateStatus(ctx, o, metav1.UpdateOptions{}); err != nil {
			t.Errorf("flux status: %v", err)
			return
		}
		handled <- time.Now()
		return
	}
}

// Seed 003's pull half: a job asks Flux to reconcile now (kubectl annotate
// --overwrite) and waits for it (kubectl wait --for=condition=Ready), with
// Flux's Kustomization CRD and a status written by the test.
func TestSeed003Pull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dyn := dynamic.NewForConfigOrDie(c.AdminRESTConfig())
	out, code := kubectlAdmin(t, "apply", "-f", seeds.Seed003Flux())
	if code != 0 {
		t.Fatalf("installing Flux's CRD: exit %d\n%s", code, out)
	}
	// Not Ready until the reconciliation the job asks for.
	ks := dyn.Resource(ksGVR).Namespace("flux-system")
	o, err := ks.Get(ctx, "shark-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.SetNestedSlice(o.Object, []any{map[string]any{"type": "Ready", "status": "False", "reason": "ArtifactFailed",
		"observedGeneration": o.GetGeneration(), "message": "latest generation of object has not been reconciled",
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}, "status", "conditions")
	if _, err := ks.UpdateStatus(ctx, o, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	handled := make(chan time.Time, 1)
	go fluxController(ctx, t, dyn, handled)

	_, b64 := adminKubeconfig(t)
	p, err := seeds.Seed003Pull(b64)
	pr, _ := runNoKubectl(t, p, err)
	j := pr.Jobs["reconcile"]
	requireSuccess(t, j)
	requireLog(t, j,
		"kustomization.kustomize.toolkit.fluxcd.io/shark-app annotated",
		"kustomization.kustomize.toolkit.fluxcd.io/shark-app condition met",
		"Applied revision: main@sha1:4e1243bd22c66e76c2ba9eddc1f91394e57f9f83",
		"Job succeeded")
	select {
	case <-handled:
	default:
		t.Fatal("the job succeeded without Flux handling its request")
	}
	o, err = ks.Get(ctx, "shark-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req := o.GetAnnotations()["reconcile.fluxcd.io/requestedAt"]
	last, _, _ := unstructured.NestedString(o.Object, "status", "lastHandledReconcileAt")
	if req == "" || req != last {
		t.Errorf("requestedAt %q, lastHandledReconcileAt %q", req, last)
	}
	// The wait ended on Flux's answer, not before it.
	if !strings.Contains(rd.StripANSI(j.Log), "condition met") {
		t.Errorf("no wait line:\n%s", rd.StripANSI(j.Log))
	}
}

// kubectlAdmin runs ferry's kubectl as the cluster's admin (the test's own
// setup, not a job's step).
func kubectlAdmin(t *testing.T, args ...string) (string, int) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(ferry, append([]string{"kubectl", "--kubeconfig", c.AdminKubeconfigPath}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "FERRY_STATE_DIR=" + filepath.Join(home, "state")}
	out, err := cmd.CombinedOutput()
	return string(out), proctest.ExitCode(t, err)
}
