package apply

import (
	"bytes"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func testObj(t *testing.T) *Object {
	objs, err := Parse("d.yaml", []byte("# x\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return objs[0]
}

func TestErrorMessages(t *testing.T) {
	o := testObj(t)
	if o.Ref() != "deployment.apps/x" {
		t.Fatalf("ref = %q", o.Ref())
	}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "x",
		errFromString(`User "system:serviceaccount:example:gitlab-example" cannot patch resource "deployments" in API group "apps" in the namespace "kube-system"`))
	want := `Error from server (Forbidden): error when applying "d.yaml:2": deployments.apps "x" is forbidden: User "system:serviceaccount:example:gitlab-example" cannot patch resource "deployments" in API group "apps" in the namespace "kube-system"`
	if got := errorMessage(o, "applying", forbidden); got != want {
		t.Fatalf("forbidden:\n%s\nwant\n%s", got, want)
	}
	nomatch := &meta.NoKindMatchError{GroupKind: schema.GroupKind{Kind: "Foo"}, SearchedVersions: []string{"v1"}}
	want = `error: resource mapping not found for name: "x" namespace: "" from "d.yaml:2": no matches for kind "Foo" in version "v1" ensure CRDs are installed first`
	if got := errorMessage(o, "applying", nomatch); got != want {
		t.Fatalf("no match:\n%s\nwant\n%s", got, want)
	}
	conflict := &apierrors.StatusError{ErrStatus: metav1.Status{Status: "Failure", Reason: metav1.StatusReasonConflict, Code: 409,
		Message: `Apply failed with 1 conflict: conflict with "helm" using apps/v1: .spec.replicas`,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: metav1.CauseTypeFieldManagerConflict, Message: `conflict with "helm" using apps/v1`, Field: ".spec.replicas"}}}}}
	got := errorMessage(o, "applying", conflict)
	for _, w := range []string{"Error from server (Conflict): error when applying \"d.yaml:2\": Apply failed", "\n  deployment.apps/x: fields owned by another manager: .spec.replicas (conflict with \"helm\" using apps/v1)", "--force-conflicts", "--field-manager=helm"} {
		if !strings.Contains(got, w) {
			t.Fatalf("conflict message lacks %q:\n%s", w, got)
		}
	}
}

type errFromString string

func (e errFromString) Error() string { return string(e) }

func TestPrinterKeepsInputOrder(t *testing.T) {
	var out, errOut bytes.Buffer
	p := newPrinter(3, &out, &errOut)
	p.done(2, &ItemResult{msg: "c"})
	p.done(1, &ItemResult{msg: "b failed", Err: errFromString("x")})
	if out.Len() != 0 || errOut.Len() != 0 {
		t.Fatal("printed before the first item was done")
	}
	p.done(0, &ItemResult{msg: "a"})
	if out.String() != "a\nc\n" || errOut.String() != "b failed\n" {
		t.Fatalf("out %q err %q", out.String(), errOut.String())
	}
}
