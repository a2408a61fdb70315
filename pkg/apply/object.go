package apply

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Object is one Kubernetes object read from a manifest, with where it came from.
type Object struct {
	*unstructured.Unstructured
	// Source is the file path, "STDIN", or the kustomization directory.
	Source string
	// Line is the 1-based line of the source where the object's document starts
	// (its first non-blank, non-comment line); 0 when unknown.
	Line int
}

// Location is "file:line" (or just the file when the line is unknown), for messages.
func (o *Object) Location() string {
	if o.Line > 0 {
		return fmt.Sprintf("%s:%d", o.Source, o.Line)
	}
	return o.Source
}

// Ref is kubectl's name for the object in output lines: "deployment.apps/shark-app",
// "service/shark-app" (lower-case kind, dot, API group, slash, name).
func (o *Object) Ref() string {
	return kindGroup(o.Unstructured) + "/" + o.GetName()
}

// kindGroup is kubectl's lower-case "kind.group" ("deployment.apps", "service").
func kindGroup(u *unstructured.Unstructured) string {
	gk := u.GroupVersionKind().GroupKind()
	return strings.ToLower(gk.String())
}
