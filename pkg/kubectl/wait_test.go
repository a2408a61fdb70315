package kubectl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const available = `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","generation":2},
 "status":{"observedGeneration":%d,"readyReplicas":3,"conditions":[
  {"type":"Available","status":"True"},{"type":"Progressing","status":"False","observedGeneration":%d}]}}`

func TestConditionMet(t *testing.T) {
	current := obj(t, strings.NewReplacer("%d", "2").Replace(available))
	stale := obj(t, strings.NewReplacer("%d", "1").Replace(available))
	for _, tc := range []struct {
		for_ string
		obj  string
		want bool
	}{
		{"condition=Available", "current", true},
		{"condition=available", "current", true}, // the type is case-insensitive
		{"condition=Available=TRUE", "current", true},
		{"condition=Available=False", "current", false},
		{"condition=Progressing=false", "current", true},
		{"condition=Ready", "current", false},
		// A condition from an older generation does not count yet.
		{"condition=Available", "stale", false},
		{"condition=Progressing=False", "stale", false},
		{"jsonpath={.status.readyReplicas}=3", "current", true},
		{"jsonpath=.status.readyReplicas=3", "current", true},
		{"jsonpath=status.readyReplicas=2", "current", false},
		{"jsonpath={.status.readyReplicas}", "current", true}, // exists
		{"jsonpath={.status.replicas}", "current", false},
		{`jsonpath={.status.conditions[?(@.type=="Available")].status}=True`, "current", true},
		{`jsonpath={.metadata.name}="web"`, "current", true}, // quotes around the value are dropped
	} {
		conds, err := parseWaitConds([]string{tc.for_})
		if err != nil {
			t.Errorf("%s: %v", tc.for_, err)
			continue
		}
		u := current
		if tc.obj == "stale" {
			u = stale
		}
		got, err := conds[0].check(u)
		if err != nil || got != tc.want {
			t.Errorf("--for=%s on the %s object: %v %v, want %v", tc.for_, tc.obj, got, err, tc.want)
		}
	}
	conds, _ := parseWaitConds([]string{"jsonpath={.status.conditions}=x"})
	if _, err := conds[0].check(current); err == nil || err.Error() != "jsonpath leads to a nested object or list which is not supported" {
		t.Errorf("nested jsonpath value: %v", err)
	}
	conds, _ = parseWaitConds([]string{"jsonpath={.status.conditions[*].type}=x"})
	if _, err := conds[0].check(current); err == nil || err.Error() != "given jsonpath expression matches more than one value" {
		t.Errorf("several jsonpath values: %v", err)
	}
	conds, err := parseWaitConds([]string{"DELETE", "create", "condition=Ready"})
	if err != nil || len(conds) != 3 || !conds[0].delete || !conds[1].create || conds[2].check == nil {
		t.Errorf("delete, create, condition: %+v %v", conds, err)
	}
}

// Bad --for values are refused before any server is contacted, with
// kubectl's messages and exit code 1.
func TestWaitArgumentErrors(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "none")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"wait", "deployment/web"}, `error: unrecognized condition: ""`},
		{[]string{"wait", "--for=ready", "deployment/web"}, `error: unrecognized condition: "ready"`},
		{[]string{"wait", "--for=jsonpath={.status.readyReplicas}=", "deployment/web"}, "error: jsonpath wait has to have a value after equal sign, like --for=jsonpath='{.status.readyReplicas}'=3"},
		{[]string{"wait", "--for=jsonpath={.a}=1=2", "deployment/web"}, "error: jsonpath wait format must be --for=jsonpath='{.status.readyReplicas}'=3 or --for=jsonpath='{.status.readyReplicas}'"},
		{[]string{"wait", "--for=jsonpath=", "deployment/web"}, "error: jsonpath expression cannot be empty"},
		{[]string{"wait", "--for=jsonpath={.a}{.b}", "deployment/web"}, "error: unexpected path string"},
		{[]string{"wait", "--for=delete", "-o", "wide", "deployment/web"}, `error: unable to match a printer suitable for the output format "wide"`},
		// A verb that is kubectl's: its code, which reads the (missing)
		// kubeconfig first.
		{[]string{"rollout", "restart", "deployment/web", "-o", "wide"}, "error: stat " + kc + ": no such file or directory"},
	} {
		var out bytes.Buffer
		code := Main(append([]string{"--kubeconfig", kc}, tc.args...), strings.NewReader(""), &out, &out, engine)
		if code != 1 || !strings.HasPrefix(out.String(), tc.want) {
			t.Errorf("%v: exit %d %q, want %q", tc.args, code, out.String(), tc.want)
		}
	}
}

// set with anything but image, and every verb ferry does not write, is
// kubectl's own code, linked in: no kubectl on PATH needed. Offline here
// (client dry run), so the output is kubectl's byte for byte.
func TestOtherVerbsAreKubectls(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	// A file, not stdin: kubectl's builder reads "-" from os.Stdin.
	dep := filepath.Join(t.TempDir(), "dep.yaml")
	os.WriteFile(dep, []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: app, image: x}]}\n"), 0o600)
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"set", "env", "--local", "-f", dep, "A=1", "-o", "jsonpath={.spec.template.spec.containers[0].env}"}, "", `[{"name":"A","value":"1"}]`},
		{[]string{"label", "--local", "-f", dep, "tier=web", "-o", "jsonpath={.metadata.labels}"}, "", `{"tier":"web"}`},
		{[]string{"create", "deployment", "web", "--image=nginx:1", "--dry-run=client", "-o", "name"}, "", "deployment.apps/web\n"},
		{[]string{"create", "job", "once", "--image=busybox", "--dry-run=client", "-o", "jsonpath={.spec.template.spec.restartPolicy}"}, "", "Never"},
	} {
		var out, errOut bytes.Buffer
		code := Main(tc.args, strings.NewReader(tc.stdin), &out, &errOut, engine)
		if code != 0 || out.String() != tc.want {
			t.Errorf("%v: exit %d %q (stderr %q), want %q", tc.args, code, out.String(), errOut.String(), tc.want)
		}
	}
}

func obj(t *testing.T, js string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(js)); err != nil {
		t.Fatal(err)
	}
	return u
}
