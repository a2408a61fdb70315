package kubectl

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// kubectl's -o jsonpath needs braces: text outside them is printed as is
// (`-o jsonpath=.spec` prints ".spec", checked against kubectl 1.32).
func TestGetJSONPathTemplateAsWritten(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{"kind": "ConfigMap", "metadata": map[string]any{"name": "app"}}}
	for tmpl, want := range map[string]string{
		".metadata.name":         ".metadata.name",
		"{.metadata.name}":       "app",
		"name={.metadata.name};": "name=app;",
		"'{.kind}'":              "ConfigMap",
	} {
		var b strings.Builder
		if err := printJSONPath(&b, tmpl, []*unstructured.Unstructured{obj}, true); err != nil {
			t.Fatalf("%s: %v", tmpl, err)
		}
		if b.String() != want {
			t.Errorf("jsonpath=%s printed %q, want %q", tmpl, b.String(), want)
		}
	}
}
