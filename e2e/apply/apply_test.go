package apply_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
	"gitlab.com/ferry-ci/ferry/pkg/apply/kustomize"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"
)

const manifests = "../../testdata/manifests"

var (
	deployGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	cmGVR     = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
)

func read(t *testing.T, opts apply.ReadOptions) []*apply.Object {
	t.Helper()
	objs, err := apply.ReadManifests(opts)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestCreateConfigureUnchanged(t *testing.T) {
	a := newApplier(t, adminConfig(t), t.TempDir())
	ns := newNamespace(t, a)
	dir := filepath.Join(manifests, "seed")
	o := apply.ApplyOptions{Namespace: ns, Annotations: map[string]string{apply.AnnotationCommitSHA: "abc"}}

	res, out, errOut := run(t, a, read(t, apply.ReadOptions{Filenames: []string{dir}}), o)
	wantLines(t, "first apply", out, "deployment.apps/shark-app created", "service/shark-app created")
	if errOut != "" || res.Err() != nil {
		t.Fatalf("errors: %q %v", errOut, res.Err())
	}
	live, err := a.Dynamic().Resource(deployGVR).Namespace(ns).Get(context.Background(), "shark-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if live.GetAnnotations()[apply.AnnotationCommitSHA] != "abc" {
		t.Fatalf("annotations = %v", live.GetAnnotations())
	}
	if mf := live.GetManagedFields(); len(mf) == 0 || mf[0].Manager != "kubectl" || mf[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Fatalf("managed fields = %+v", mf)
	}

	_, out, _ = run(t, a, read(t, apply.ReadOptions{Filenames: []string{dir}}), o)
	wantLines(t, "re-apply", out, "deployment.apps/shark-app unchanged", "service/shark-app unchanged")

	objs := read(t, apply.ReadOptions{Filenames: []string{dir}})
	objs[0].Object["spec"].(map[string]any)["replicas"] = int64(3)
	_, out, _ = run(t, a, objs, o)
	wantLines(t, "changed replicas", out, "deployment.apps/shark-app configured", "service/shark-app unchanged")

	// A new commit changes the annotation: configured, honestly.
	o.Annotations = map[string]string{apply.AnnotationCommitSHA: "def"}
	_, out, _ = run(t, a, objs, o)
	wantLines(t, "new commit", out, "deployment.apps/shark-app configured", "service/shark-app configured")
}

func TestManyObjectsListLookup(t *testing.T) {
	// 4+ objects of one resource in one namespace take the LIST path.
	a := newApplier(t, adminConfig(t), "")
	ns := newNamespace(t, a)
	var sb strings.Builder
	for i := range 6 {
		sb.WriteString("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm" + string(rune('a'+i)) + "\ndata:\n  k: v\n")
	}
	objs := parse(t, "many.yaml", sb.String())
	_, out, _ := run(t, a, objs, apply.ApplyOptions{Namespace: ns})
	if strings.Count(out, " created\n") != 6 {
		t.Fatalf("first apply:\n%s", out)
	}
	objs[2].Object["data"] = map[string]any{"k": "changed"}
	_, out, _ = run(t, a, objs, apply.ApplyOptions{Namespace: ns})
	if strings.Count(out, " unchanged\n") != 5 || !strings.Contains(out, "configmap/cmc configured\n") {
		t.Fatalf("re-apply:\n%s", out)
	}
	// input order is kept even with 8 workers
	if !strings.HasPrefix(out, "configmap/cma ") || !strings.HasSuffix(out, "configmap/cmf unchanged\n") {
		t.Fatalf("order:\n%s", out)
	}
}

func TestRecursiveDirectoryAndStdin(t *testing.T) {
	a := newApplier(t, adminConfig(t), "")
	ns := newNamespace(t, a)
	objs := read(t, apply.ReadOptions{Filenames: []string{filepath.Join(manifests, "nested"), "-"}, Recursive: true,
		Stdin: strings.NewReader("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-stdin\n")})
	_, out, errOut := run(t, a, objs, apply.ApplyOptions{Namespace: ns})
	wantLines(t, "apply -R -f dir -f -", out, "configmap/nested-a created", "configmap/nested-b created", "configmap/from-stdin created")
	if errOut != "" {
		t.Fatal(errOut)
	}
}

func TestKustomize(t *testing.T) {
	a := newApplier(t, adminConfig(t), "")
	ns := newNamespace(t, a)
	objs := read(t, apply.ReadOptions{Kustomize: []string{filepath.Join(manifests, "kustomize")}, Kustomizer: kustomize.Build})
	_, out, _ := run(t, a, objs, apply.ApplyOptions{Namespace: ns})
	if !strings.Contains(out, "configmap/kz-plain created") || !strings.Contains(out, "configmap/kz-generated-") {
		t.Fatalf("apply -k:\n%s", out)
	}
	cm, err := a.Dynamic().Resource(cmGVR).Namespace(ns).Get(context.Background(), "kz-plain", metav1.GetOptions{})
	if err != nil || cm.GetLabels()["app.kubernetes.io/part-of"] != "kz" {
		t.Fatalf("kz-plain: %v %v", err, cm)
	}
}

func TestCRDAndCustomResourceInOneFile(t *testing.T) {
	a := newApplier(t, adminConfig(t), t.TempDir())
	ns := newNamespace(t, a)
	// Warm the mapper first so that a stale discovery must be refreshed.
	read(t, apply.ReadOptions{Filenames: []string{filepath.Join(manifests, "seed")}})
	objs := read(t, apply.ReadOptions{Filenames: []string{filepath.Join(manifests, "crd", "all.yaml")}})
	res, out, errOut := run(t, a, objs, apply.ApplyOptions{Namespace: ns})
	if res.Err() != nil {
		t.Fatalf("%v\n%s", res.Err(), errOut)
	}
	// The resource is first in the file and printed first, though applied last.
	wantLines(t, "CR before its CRD", out, "shark.ferry.example.com/bruce created", "customresourcedefinition.apiextensions.k8s.io/sharks.ferry.example.com created")
	gvr := schema.GroupVersionResource{Group: "ferry.example.com", Version: "v1", Resource: "sharks"}
	u, err := a.Dynamic().Resource(gvr).Namespace(ns).Get(context.Background(), "bruce", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if size, _, _ := unstructuredInt(u.Object, "spec", "size"); size != 7 {
		t.Fatalf("spec.size = %d", size)
	}
	_, out, _ = run(t, a, read(t, apply.ReadOptions{Filenames: []string{filepath.Join(manifests, "crd", "all.yaml")}}), apply.ApplyOptions{Namespace: ns})
	wantLines(t, "re-apply", out, "shark.ferry.example.com/bruce unchanged", "customresourcedefinition.apiextensions.k8s.io/sharks.ferry.example.com unchanged")
}

func unstructuredInt(m map[string]any, path ...string) (int64, bool, error) {
	for _, p := range path[:len(path)-1] {
		m, _ = m[p].(map[string]any)
	}
	v, ok := m[path[len(path)-1]].(int64)
	return v, ok, nil
}

func TestNamespaceMismatch(t *testing.T) {
	a := newApplier(t, adminConfig(t), "")
	ns := newNamespace(t, a)
	objs := parse(t, "m.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: other\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n")
	res, out, errOut := run(t, a, objs, apply.ApplyOptions{Namespace: ns, NamespaceExplicit: true})
	wantLines(t, "stderr", errOut, `error: m.yaml:1: the namespace from the provided object "other" does not match the namespace "`+ns+`". You must pass '--namespace=other' to perform this operation.`)
	wantLines(t, "stdout (the other object is still applied)", out, "configmap/b created")
	if res.Failed != 1 || res.Err() == nil {
		t.Fatalf("failed = %d", res.Failed)
	}
}

func TestForbiddenWithServiceAccount(t *testing.T) {
	ctx := context.Background()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(sa.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	a := newApplier(t, cfg, "")
	data, err := os.ReadFile(filepath.Join(manifests, "seed", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := parse(t, "deployment.yml", string(data))
	objs = append(objs, parse(t, "svc.yml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: shark-app\nspec:\n  ports:\n  - port: 80\n")...)
	res, out, errOut := run(t, a, objs, apply.ApplyOptions{Namespace: "kube-system"})
	want := `Error from server (Forbidden): error when applying "deployment.yml:1": deployments.apps "shark-app" is forbidden: User "system:serviceaccount:example:gitlab-example" cannot patch resource "deployments" in API group "apps" in the namespace "kube-system"`
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != 2 || lines[0] != want || !strings.Contains(lines[1], `services "shark-app" is forbidden`) {
		t.Fatalf("stderr:\n%s\nwant first line:\n%s", errOut, want)
	}
	if out != "" || res.Failed != 2 {
		t.Fatalf("stdout %q failed %d", out, res.Failed)
	}
	// The same credentials may apply in their own namespace (fresh objects:
	// Apply settled the namespace of the first ones to kube-system).
	objs = append(parse(t, "deployment.yml", string(data)), parse(t, "svc.yml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: shark-app\nspec:\n  ports:\n  - port: 80\n")...)
	res, out, errOut = run(t, a, objs, apply.ApplyOptions{Namespace: "example"})
	if res.Err() != nil {
		t.Fatalf("in example: %s", errOut)
	}
	wantLines(t, "in example", out, "deployment.apps/shark-app created", "service/shark-app created")
}

func TestUnknownKind(t *testing.T) {
	a := newApplier(t, adminConfig(t), t.TempDir())
	ns := newNamespace(t, a)
	objs := parse(t, "foo.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n---\napiVersion: v1\nkind: Foo\nmetadata:\n  name: x\n")
	res, out, errOut := run(t, a, objs, apply.ApplyOptions{Namespace: ns})
	wantLines(t, "stderr", errOut, `error: resource mapping not found for name: "x" namespace: "" from "foo.yaml:6": no matches for kind "Foo" in version "v1" ensure CRDs are installed first`)
	wantLines(t, "stdout", out, "configmap/fine created")
	if res.Failed != 1 {
		t.Fatalf("failed = %d", res.Failed)
	}
}

func TestFieldManagerConflict(t *testing.T) {
	a := newApplier(t, adminConfig(t), "")
	ns := newNamespace(t, a)
	cm := func(v string) []*apply.Object {
		return parse(t, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  owner: "+v+"\n")
	}
	// helm's own server-side apply: no last-applied annotation, whose
	// presence makes the API server forgive manager kubectl's conflicts.
	if res, _, errOut := run(t, a, cm("helm"), apply.ApplyOptions{Namespace: ns, FieldManager: "helm", ServerSide: true}); res.Err() != nil {
		t.Fatal(errOut)
	}
	// --server-side keeps server-side apply's conflicts.
	res, out, errOut := run(t, a, cm("ferry"), apply.ApplyOptions{Namespace: ns, ServerSide: true})
	if res.Failed != 1 || out != "" {
		t.Fatalf("no conflict: %q", out)
	}
	for _, want := range []string{`Error from server (Conflict): error when applying "cm.yaml:1": Apply failed with 1 conflict: conflict with "helm"`, ".data.owner", "--force-conflicts", "--field-manager=helm"} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	_, out, _ = run(t, a, cm("ferry"), apply.ApplyOptions{Namespace: ns, Force: true, ServerSide: true})
	wantLines(t, "forced", out, "configmap/shared serverside-applied")
	// Plain apply settles it as client-side apply would: the manifest
	// changed the field since the last apply, so it wins.
	res, out, errOut = run(t, a, cm("plain"), apply.ApplyOptions{Namespace: ns})
	if res.Err() != nil {
		t.Fatal(errOut)
	}
	wantLines(t, "plain", out, "configmap/shared configured")
}

func TestDryRun(t *testing.T) {
	a := newApplier(t, adminConfig(t), "")
	ns := newNamespace(t, a)
	ctx := context.Background()
	objs := parse(t, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\ndata:\n  k: v1\n")
	_, out, _ := run(t, a, objs, apply.ApplyOptions{Namespace: ns, DryRun: apply.DryRunServer})
	wantLines(t, "server dry run", out, "configmap/dry created (server dry run)")
	_, out, _ = run(t, a, objs, apply.ApplyOptions{Namespace: ns, DryRun: apply.DryRunClient})
	wantLines(t, "client dry run", out, "configmap/dry created (dry run)")
	if _, err := a.Dynamic().Resource(cmGVR).Namespace(ns).Get(ctx, "dry", metav1.GetOptions{}); err == nil {
		t.Fatal("dry run created the object")
	}
	run(t, a, objs, apply.ApplyOptions{Namespace: ns})
	_, out, _ = run(t, a, objs, apply.ApplyOptions{Namespace: ns, DryRun: apply.DryRunServer})
	wantLines(t, "server dry run, same", out, "configmap/dry unchanged (server dry run)")
	changed := parse(t, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\ndata:\n  k: v2\n")
	_, out, _ = run(t, a, changed, apply.ApplyOptions{Namespace: ns, DryRun: apply.DryRunServer})
	wantLines(t, "server dry run, changed", out, "configmap/dry configured (server dry run)")
	live, err := a.Dynamic().Resource(cmGVR).Namespace(ns).Get(ctx, "dry", metav1.GetOptions{})
	if err != nil || live.Object["data"].(map[string]any)["k"] != "v1" {
		t.Fatalf("dry run changed the object: %v %v", err, live)
	}
}
