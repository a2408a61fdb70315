package apply

import (
	"bytes"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
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

// A 422 prints as kubectl prints it ("The Deployment "x" is invalid: ..."),
// with where the object came from.
func TestInvalidAsKubectl(t *testing.T) {
	o := testObj(t)
	one := apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "x", field.ErrorList{
		field.Invalid(field.NewPath("spec", "replicas"), -1, "must be greater than or equal to 0")})
	if got, want := errorMessage(o, "applying", one), `The Deployment "x" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0 (when applying "d.yaml:2")`; got != want {
		t.Errorf("one cause:\n got %s\nwant %s", got, want)
	}
	two := apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "x", field.ErrorList{
		field.Invalid(field.NewPath("spec", "replicas"), -1, "must be greater than or equal to 0"),
		field.Required(field.NewPath("spec", "selector"), "")})
	if got, want := errorMessage(o, "applying", two), "The Deployment \"x\" is invalid: \n* spec.replicas: Invalid value: -1: must be greater than or equal to 0\n* spec.selector: Required value (when applying \"d.yaml:2\")"; got != want {
		t.Errorf("two causes:\n got %q\nwant %q", got, want)
	}
	bare := &apierrors.StatusError{ErrStatus: metav1.Status{Status: "Failure", Code: 422, Reason: metav1.StatusReasonInvalid, Message: "patch: Invalid value: x"}}
	if got, want := errorMessage(o, "applying", bare), `The request is invalid: patch: Invalid value: x (when applying "d.yaml:2")`; got != want {
		t.Errorf("no details:\n got %s\nwant %s", got, want)
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

// A manifest with a field the schema does not declare: the server refuses
// the server-side apply with a 500 and no reason; ferry prints it as the
// BadRequest kubectl's create gets, with kubectl's words ("strict decoding
// error: unknown field") and the server's in parentheses.
func TestUnknownFieldIsBadRequest(t *testing.T) {
	o := testObj(t)
	for _, tc := range []struct {
		msg  string
		want string
	}{
		{"failed to create typed patch object (ns/x; apps/v1, Kind=Deployment): .spec.replicaz: field not declared in schema",
			`Error from server (BadRequest): error when applying "d.yaml:2": strict decoding error: unknown field "spec.replicaz" (server-side apply: .spec.replicaz: field not declared in schema)`},
		{"failed to create typed patch object (ns/x; apps/v1, Kind=Deployment): errors:\n  .spec.bogus: field not declared in schema\n  .spec.template.spec.containers[name=\"app\"].typo: field not declared in schema",
			`Error from server (BadRequest): error when applying "d.yaml:2": strict decoding error: unknown field "spec.bogus", unknown field "spec.template.spec.containers[name=\"app\"].typo" (server-side apply: .spec.bogus: field not declared in schema; .spec.template.spec.containers[name="app"].typo: field not declared in schema)`},
	} {
		for _, reason := range []metav1.StatusReason{"", metav1.StatusReasonUnknown, metav1.StatusReasonInternalError} {
			err := &apierrors.StatusError{ErrStatus: metav1.Status{Status: "Failure", Code: 500, Reason: reason, Message: tc.msg}}
			if got := errorMessage(o, "applying", err); got != tc.want {
				t.Errorf("reason %q:\n got %s\nwant %s", reason, got, tc.want)
			}
		}
	}
	// Any other status keeps its own reason and words.
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "nope")
	if got, want := errorMessage(o, "applying", notFound), `Error from server (NotFound): error when applying "d.yaml:2": namespaces "nope" not found`; got != want {
		t.Errorf("not found:\n got %s\nwant %s", got, want)
	}
}
