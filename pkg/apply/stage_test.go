package apply

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestStageOf(t *testing.T) {
	ns := &meta.RESTMapping{Scope: meta.RESTScopeNamespace}
	root := &meta.RESTMapping{Scope: meta.RESTScopeRoot}
	cases := []struct {
		gk      schema.GroupKind
		mapping *meta.RESTMapping
		want    int
	}{
		{crdGK, nil, stagePrereq},
		{namespaceGK, root, stagePrereq},
		{schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}, root, stagePrereq},
		{schema.GroupKind{Group: "storage.k8s.io", Kind: "StorageClass"}, root, stageClass},
		{schema.GroupKind{Group: "networking.k8s.io", Kind: "IngressClass"}, root, stageClass},
		{schema.GroupKind{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}, root, stageRest},
		{schema.GroupKind{Group: "apps", Kind: "Deployment"}, ns, stageRest},
		{schema.GroupKind{Group: "ferry.example.com", Kind: "Shark"}, nil, stageRest},
	}
	for _, c := range cases {
		if got := stageOf(c.gk, c.mapping); got != c.want {
			t.Errorf("stageOf(%v) = %d, want %d", c.gk, got, c.want)
		}
	}
}

func TestSetNamespace(t *testing.T) {
	obj := func(ns string) *Object {
		objs, err := Parse("n.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: "+ns+"\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return objs[0]
	}
	nsm := &meta.RESTMapping{Scope: meta.RESTScopeNamespace}
	o := obj(`""`)
	if err := setNamespace(o, nsm, "ctx-ns", false); err != nil || o.GetNamespace() != "ctx-ns" {
		t.Fatalf("defaulting: %v %q", err, o.GetNamespace())
	}
	o = obj("a")
	if err := setNamespace(o, nsm, "ctx-ns", false); err != nil || o.GetNamespace() != "a" {
		t.Fatalf("implicit default must not override: %v %q", err, o.GetNamespace())
	}
	err := setNamespace(obj("a"), nsm, "b", true)
	want := `the namespace from the provided object "a" does not match the namespace "b". You must pass '--namespace=a' to perform this operation.`
	if err == nil || err.Error() != want {
		t.Fatalf("mismatch: %v", err)
	}
	if msg := errorMessage(obj("a"), "applying", err); msg != "error: n.yaml:1: "+want {
		t.Fatalf("message = %q", msg)
	}
	o = obj("a")
	if err := setNamespace(o, &meta.RESTMapping{Scope: meta.RESTScopeRoot}, "b", true); err != nil || o.GetNamespace() != "" {
		t.Fatalf("cluster-scoped: %v %q", err, o.GetNamespace())
	}
}

func TestUnifiedDiff(t *testing.T) {
	from := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nm\n"
	to := "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\nk\nm\nl\n"
	got := unifiedDiff("live/x", "merged/x", from, to)
	want := "--- live/x\n+++ merged/x\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n@@ -10,3 +10,4 @@\n j\n k\n m\n+l\n"
	if got != want {
		t.Fatalf("diff:\n%s\nwant:\n%s", got, want)
	}
	if d := unifiedDiff("a", "b", "", "x: 1\n"); !strings.Contains(d, "@@ -0,0 +1,1 @@\n+x: 1\n") {
		t.Fatalf("diff from empty:\n%s", d)
	}
}

func TestTraceAnnotations(t *testing.T) {
	vars := map[string]string{"CI_PROJECT_PATH": "g/p", "CI_COMMIT_SHA": "abc", "CI_JOB_URL": "https://x/j/1", "CI_PIPELINE_URL": "https://x/p/1"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	a := TraceAnnotations(lookup, false)
	if len(a) != 2 || a[AnnotationCommitSHA] != "abc" || a[AnnotationProject] != "g/p" {
		t.Fatalf("default = %v", a)
	}
	if a := TraceAnnotations(lookup, true); len(a) != 4 || a[AnnotationJobURL] != "https://x/j/1" {
		t.Fatalf("with job = %v", a)
	}
}
