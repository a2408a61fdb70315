package apply

import (
	"encoding/json"
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLocateConflictPaths(t *testing.T) {
	doc := map[string]any{}
	if err := json.Unmarshal([]byte(`{
		"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x", "a": "b"}, "finalizers": ["f1", "f2"]},
		"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}],
			"template": {"spec": {"containers": [{"name": "side"}, {"name": "app", "image": "a:1"}]}}}}`), &doc); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		".spec.replicas": `2`,
		`.spec.template.spec.containers[name="app"].image`:                       `"a:1"`,
		`.spec.ports[port=443,protocol="TCP"]`:                                   `{"port":443,"protocol":"TCP"}`,
		`.metadata.finalizers[="f2"]`:                                            `"f2"`,
		`.metadata.annotations.kubectl.kubernetes.io/last-applied-configuration`: `"x"`,
		`.spec.template.spec.containers[0]`:                                      `{"name":"side"}`,
	} {
		s, ok := locate(doc, path)
		if !ok {
			t.Errorf("%s: not found", path)
			continue
		}
		if got, _ := json.Marshal(s.value()); string(got) != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
	for _, path := range []string{".spec.nothere", `.spec.template.spec.containers[name="x"]`, ".spec.replicas.deeper", "spec"} {
		if _, ok := locate(doc, path); ok {
			t.Errorf("%s: found", path)
		}
	}
	s, _ := locate(doc, `.spec.ports[port=80,protocol="TCP"]`)
	s.remove()
	s, _ = locate(doc, `.spec.template.spec.containers[name="app"].image`)
	s.remove()
	got, _ := json.Marshal(doc["spec"])
	if want := `{"ports":[{"port":443,"protocol":"TCP"}],"replicas":2,"template":{"spec":{"containers":[{"name":"side"},{"name":"app"}]}}}`; string(got) != want {
		t.Fatalf("after removals: %s\nwant %s", got, want)
	}
}

// TestDropUnknownFields: the paths of structured-merge-diff's "field not
// declared in schema" are removed from the body; any other error, or a path
// the body does not hold, removes nothing.
func TestDropUnknownFields(t *testing.T) {
	body := map[string]any{}
	json.Unmarshal([]byte(`{"spec": {"bogus": 1, "replicas": 2, "template": {"spec": {"containers": [{"name": "app", "typo": "x"}]}}}}`), &body)
	err := errors.New("failed to create typed patch object (ns/x; apps/v1, Kind=Deployment): errors:\n  .spec.bogus: field not declared in schema\n  .spec.template.spec.containers[name=\"app\"].typo: field not declared in schema")
	paths := dropUnknownFields(body, err)
	if len(paths) != 2 {
		t.Fatalf("dropped %v, want 2 paths", paths)
	}
	got, _ := json.Marshal(body)
	if want := `{"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"app"}]}}}}`; string(got) != want {
		t.Fatalf("body = %s, want %s", got, want)
	}
	if p := dropUnknownFields(body, errors.New("conflict")); p != nil {
		t.Fatalf("dropped %v for another error", p)
	}
	if p := dropUnknownFields(body, errors.New(".spec.gone: field not declared in schema")); p != nil {
		t.Fatalf("dropped %v for a path the body lacks", p)
	}
}

func TestUpgradedManagedFields(t *testing.T) {
	fields := func(s string) *metav1.FieldsV1 { return &metav1.FieldsV1{Raw: []byte(s)} }
	m := &liveMeta{ResourceVersion: "7", ManagedFields: []metav1.ManagedFieldsEntry{
		{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
			FieldsV1: fields(`{"f:data":{"f:a":{}},"f:metadata":{"f:annotations":{".":{},"f:kubectl.kubernetes.io/last-applied-configuration":{}}}}`)},
		{Manager: "ferry", Operation: metav1.ManagedFieldsOperationApply, APIVersion: "v1", FieldsV1: fields(`{"f:data":{"f:b":{}}}`)},
		{Manager: "kubectl-scale", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", FieldsV1: fields(`{"f:data":{"f:c":{}}}`)},
	}}
	mf, changed, err := upgradedManagedFields(m, DefaultFieldManager)
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	if len(mf) != 2 || mf[0].Manager != "kubectl" || mf[0].Operation != metav1.ManagedFieldsOperationApply || mf[1].Manager != "kubectl-scale" {
		t.Fatalf("managed fields = %+v", mf)
	}
	want := `{"f:data":{"f:a":{},"f:b":{}},"f:metadata":{"f:annotations":{".":{},"f:kubectl.kubernetes.io/last-applied-configuration":{}}}}`
	if got := string(mf[0].FieldsV1.Raw); got != want {
		t.Fatalf("fields = %s\nwant %s", got, want)
	}
	if _, changed, _ := upgradedManagedFields(&liveMeta{ManagedFields: mf}, DefaultFieldManager); changed {
		t.Fatal("a migrated object migrates again")
	}
	// A custom --field-manager takes client-side apply's fields, not ferry's legacy ones.
	mf, _, _ = upgradedManagedFields(m, "deployer")
	if len(mf) != 3 || mf[0].Manager != "deployer" || mf[1].Manager != "ferry" {
		t.Fatalf("custom manager: %+v", mf)
	}
}

func TestLastAppliedValue(t *testing.T) {
	objs, err := Parse("x.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: old\ndata:\n  k: v\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lastAppliedValue(objs[0].Unstructured)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"apiVersion":"v1","data":{"k":"v"},"kind":"ConfigMap","metadata":{"name":"x"}}` + "\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
