package kubectl

import (
	"strings"
	"testing"
)

// Which kubectl command lines take the deploy lock: every call that can
// change an object, never a read or a dry run.
func TestMutating(t *testing.T) {
	for _, c := range []struct {
		args  string
		verb  string
		ns    string
		takes bool
	}{
		{"apply -f x.yaml", "apply", "", true},
		{"-n prod delete deployment web", "delete", "prod", true},
		{"delete deployment web --namespace=prod", "delete", "prod", true},
		{"--as admin patch deployment web -p {}", "patch", "", true},
		{"rollout restart deployment/web -nprod", "rollout restart", "prod", true},
		{"rollout undo deployment/web", "rollout undo", "", true},
		{"set image deployment/web app=x:2", "set image", "", true},
		{"scale --replicas=3 deployment/web", "scale", "", true},
		{"label configmap x a=b", "label", "", true},
		{"annotate configmap x a=b", "annotate", "", true},
		{"replace -f x.yaml", "replace", "", true},
		{"edit deployment web", "edit", "", true},
		{"delete configmap x --dry-run=none", "delete", "", true},
		{"delete configmap x --dry-run=server", "", "", false},
		{"delete configmap x --dry-run", "", "", false},
		{"apply -f x.yaml --dry-run=client", "", "", false},
		{"get configmap apply", "", "", false},
		{"describe deployment web", "", "", false},
		{"diff -f x.yaml", "", "", false},
		{"logs deploy/web", "", "", false},
		{"wait --for=condition=Available deployment/web", "", "", false},
		{"rollout status deployment/web", "", "", false},
		{"rollout history deployment/web", "", "", false},
		{"apply view-last-applied configmap x", "", "", false},
		{"version", "", "", false},
	} {
		args := strings.Fields(c.args)
		verb, ns, takes := mutating(args)
		if takes != c.takes || (takes && (verb != c.verb || ns != c.ns)) {
			t.Errorf("%q: got (%q, %q, %v), want (%q, %q, %v)", c.args, verb, ns, takes, c.verb, c.ns, c.takes)
		}
	}
}
