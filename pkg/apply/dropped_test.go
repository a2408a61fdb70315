package apply

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kubectlscheme "k8s.io/kubectl/pkg/scheme"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/yaml"
)

// doc decodes YAML the way manifests are decoded (integers as int64).
func doc(t *testing.T, y string) map[string]any {
	t.Helper()
	objs, err := Parse("t.yaml", []byte(y), nil)
	if err != nil || len(objs) != 1 {
		t.Fatalf("parse %q: %v", y, err)
	}
	return objs[0].Object
}

// fields decodes a managedFields FieldsV1 document.
func fields(t *testing.T, js string) *fieldpath.Set {
	t.Helper()
	s := fieldpath.NewSet()
	if err := s.FromJSON(bytes.NewReader([]byte(js))); err != nil {
		t.Fatalf("fields %s: %v", js, err)
	}
	return s
}

// paths lists a set's members as strings, sorted.
func paths(s *fieldpath.Set) []string {
	var out []string
	s.Iterate(func(p fieldpath.Path) { out = append(out, p.String()) })
	sort.Strings(out)
	return out
}

const deployHead = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n"

// TestDroppedFields: what client-side apply's three-way patch deletes, in
// managedFields paths: a member of another manager's set goes when a
// prefix of it is in the last-applied configuration and not in the new
// manifest.
func TestDroppedFields(t *testing.T) {
	for _, tc := range []struct {
		name                string
		lastApplied, manif  string
		owned               string
		wantTake, wantPrefs []string
		replaceLists        bool // a custom resource (JSON merge patch)
	}{
		{name: "label taken by kubectl label --overwrite, then dropped",
			lastApplied: deployHead + "  labels: {app: app, team: blue}\n",
			manif:       deployHead + "  labels: {app: app}\n",
			owned:       `{"f:metadata":{"f:labels":{"f:team":{}}}}`,
			wantTake:    []string{".metadata.labels.team"}, wantPrefs: []string{".metadata.labels.team"}},
		{name: "annotation added by kubectl annotate, never in the manifest: kept",
			lastApplied: deployHead + "  annotations: {a: b}\n",
			manif:       deployHead + "  annotations: {a: b}\n",
			owned:       `{"f:metadata":{"f:annotations":{"f:note":{}}}}`},
		{name: "value differs but the field stays: kept",
			lastApplied: deployHead + "spec:\n  replicas: 2\n",
			manif:       deployHead + "spec:\n  replicas: 3\n",
			owned:       `{"f:spec":{"f:replicas":{}}}`},
		{name: "scaled replicas dropped from the manifest",
			lastApplied: deployHead + "spec:\n  replicas: 2\n  paused: false\n",
			manif:       deployHead + "spec:\n  paused: false\n",
			owned:       `{"f:spec":{"f:replicas":{},"f:paused":{}}}`,
			wantTake:    []string{".spec.replicas"}, wantPrefs: []string{".spec.replicas"}},
		{name: "containers by name: the dropped one goes whole, the kept one keeps its image",
			lastApplied: deployHead + "spec:\n  template:\n    spec:\n      containers:\n      - {name: app, image: a:1}\n      - {name: side, image: s:1}\n",
			manif:       deployHead + "spec:\n  template:\n    spec:\n      containers:\n      - {name: app, image: a:2}\n",
			owned: `{"f:spec":{"f:template":{"f:spec":{"f:containers":{` +
				`"k:{\"name\":\"app\"}":{"f:image":{}},` +
				`"k:{\"name\":\"side\"}":{"f:image":{},"f:imagePullPolicy":{}}}}}}}`,
			wantTake:  []string{`.spec.template.spec.containers[name="side"].image`, `.spec.template.spec.containers[name="side"].imagePullPolicy`},
			wantPrefs: []string{`.spec.template.spec.containers[name="side"]`}},
		{name: "env by name: A dropped, B changed value",
			lastApplied: deployHead + "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n        env: [{name: A, value: '1'}, {name: B, value: '2'}]\n",
			manif:       deployHead + "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n        env: [{name: B, value: '3'}]\n",
			owned: `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{"f:env":{` +
				`"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}},` +
				`"k:{\"name\":\"B\"}":{"f:value":{}}}}}}}}}`,
			wantTake: []string{
				`.spec.template.spec.containers[name="app"].env[name="A"]`,
				`.spec.template.spec.containers[name="app"].env[name="A"].name`,
				`.spec.template.spec.containers[name="app"].env[name="A"].value`},
			wantPrefs: []string{`.spec.template.spec.containers[name="app"].env[name="A"]`}},
		{name: "ports keyed with the protocol the server defaulted",
			lastApplied: deployHead + "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n        ports: [{containerPort: 80}, {containerPort: 443}]\n",
			manif:       deployHead + "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n        ports: [{containerPort: 80}]\n",
			owned: `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{"f:ports":{` +
				`"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}},` +
				`"k:{\"containerPort\":443,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}}}`,
			wantTake: []string{
				`.spec.template.spec.containers[name="app"].ports[containerPort=443,protocol="TCP"]`,
				`.spec.template.spec.containers[name="app"].ports[containerPort=443,protocol="TCP"].containerPort`},
			wantPrefs: []string{`.spec.template.spec.containers[name="app"].ports[containerPort=443,protocol="TCP"]`}},
		{name: "a map dropped whole takes what others added to it (kubectl sends labels: null)",
			lastApplied: deployHead + "  labels: {app: app}\n",
			manif:       deployHead,
			owned:       `{"f:metadata":{"f:labels":{"f:other":{}}}}`,
			wantTake:    []string{".metadata.labels.other"}, wantPrefs: []string{".metadata.labels"}},
		{name: "set members by value (finalizers)",
			lastApplied: deployHead + "  finalizers: [x/a, x/b]\n",
			manif:       deployHead + "  finalizers: [x/a]\n",
			owned:       `{"f:metadata":{"f:finalizers":{"v:\"x/a\"":{},"v:\"x/b\"":{}}}}`,
			wantTake:    []string{`.metadata.finalizers[="x/b"]`}, wantPrefs: []string{`.metadata.finalizers[="x/b"]`}},
		{name: "nested map field dropped, sibling kept",
			lastApplied: deployHead + "spec:\n  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n",
			manif:       deployHead + "spec:\n  strategy:\n    rollingUpdate: {maxSurge: 1}\n",
			owned:       `{"f:spec":{"f:strategy":{"f:rollingUpdate":{"f:maxSurge":{},"f:maxUnavailable":{}}}}}`,
			wantTake:    []string{".spec.strategy.rollingUpdate.maxUnavailable"}, wantPrefs: []string{".spec.strategy.rollingUpdate.maxUnavailable"}},
		{name: "status and list indexes are never taken",
			lastApplied: deployHead + "spec:\n  x: [1, 2]\nstatus:\n  replicas: 1\n",
			manif:       deployHead + "spec:\n  x: [1]\n",
			owned:       `{"f:status":{"f:replicas":{}},"f:spec":{"f:x":{"i:1":{}}}}`},
		{name: "custom resource: another manager's item and field in a list the manifest keeps",
			lastApplied:  "apiVersion: x.test/v1\nkind: W\nmetadata:\n  name: w\nspec:\n  items: [{name: one, v: '1'}]\n  m: {a: 1}\n",
			manif:        "apiVersion: x.test/v1\nkind: W\nmetadata:\n  name: w\nspec:\n  items: [{name: one, v: '1'}]\n  m: {a: 1}\n",
			owned:        `{"f:spec":{"f:items":{"k:{\"name\":\"one\"}":{"f:extra":{}},"k:{\"name\":\"three\"}":{".":{},"f:name":{}}},"f:m":{"f:b":{}}}}`,
			replaceLists: true,
			wantTake:     []string{`.spec.items[name="one"].extra`, `.spec.items[name="three"]`, `.spec.items[name="three"].name`},
			wantPrefs:    []string{`.spec.items[name="one"].extra`, `.spec.items[name="three"]`}},
		{name: "built-in kind: another manager's item in a merged list stays (strategic merge patch)",
			lastApplied: deployHead + "spec:\n  template:\n    spec:\n      containers: [{name: app}]\n",
			manif:       deployHead + "spec:\n  template:\n    spec:\n      containers: [{name: app}]\n",
			owned:       `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{"f:extra":{}},"k:{\"name\":\"debug\"}":{".":{},"f:name":{}}}}}}}`},
		{name: "not in the last-applied configuration at all: kept",
			lastApplied: deployHead + "spec:\n  replicas: 2\n",
			manif:       deployHead + "spec:\n  replicas: 2\n",
			owned:       `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"injected\"}":{".":{},"f:name":{}}}}}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			take, prefs := droppedFields(doc(t, tc.lastApplied), doc(t, tc.manif), fields(t, tc.owned), tc.replaceLists)
			if got := paths(take); strings.Join(got, " ") != strings.Join(tc.wantTake, " ") {
				t.Errorf("take = %q\nwant   %q", got, tc.wantTake)
			}
			if got := paths(prefs); strings.Join(got, " ") != strings.Join(tc.wantPrefs, " ") {
				t.Errorf("prefixes = %q\nwant       %q", got, tc.wantPrefs)
			}
		})
	}
}

func entry(manager string, op metav1.ManagedFieldsOperationType, sub, version, fieldsJSON string) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: op, Subresource: sub, APIVersion: version,
		FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(fieldsJSON)}}
}

// TestTakeOverDropped: the dropped fields move from every other manager to
// the applier's Apply entry; nothing else moves; emptied entries go.
func TestTakeOverDropped(t *testing.T) {
	apply, update := metav1.ManagedFieldsOperationApply, metav1.ManagedFieldsOperationUpdate
	la := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"app","labels":{"app":"app","team":"blue"}},"spec":{"replicas":2}}`
	body := &unstructured.Unstructured{Object: doc(t, deployHead+"  labels: {app: app}\nspec:\n  minReadySeconds: 1\n")}
	mf := []metav1.ManagedFieldsEntry{
		entry("kubectl", apply, "", "apps/v1", `{"f:metadata":{"f:labels":{"f:app":{}}}}`),
		entry("kubectl-label", update, "", "apps/v1", `{"f:metadata":{"f:labels":{"f:team":{}}}}`),
		entry("kubectl", update, "scale", "apps/v1", `{"f:spec":{"f:replicas":{}}}`),
		entry("kubectl-annotate", update, "", "apps/v1", `{"f:metadata":{"f:annotations":{"f:note":{}}}}`),
		entry("helm", apply, "", "apps/v1", `{"f:metadata":{"f:labels":{"f:app":{},"f:team":{}}}}`),
		entry("kube-controller-manager", update, "status", "apps/v1", `{"f:status":{"f:replicas":{}}}`),
		entry("old", update, "", "apps/v1beta2", `{"f:metadata":{"f:labels":{"f:team":{}}}}`),
	}
	orig, _ := json.Marshal(mf)
	out, prefs, changed, err := takeOverDropped(mf, la, body, "kubectl")
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	if after, _ := json.Marshal(mf); !bytes.Equal(orig, after) {
		t.Fatal("the input entries were modified")
	}
	got := map[string]string{}
	for _, e := range out {
		got[e.Manager+"/"+string(e.Operation)+"/"+e.Subresource] = string(e.FieldsV1.Raw)
	}
	want := map[string]string{
		"kubectl/Apply/": `{"f:metadata":{"f:labels":{"f:app":{},"f:team":{}}},"f:spec":{"f:replicas":{}}}`,
		// kubectl-label and the scale entry are left empty: removed.
		"kubectl-annotate/Update/":              `{"f:metadata":{"f:annotations":{"f:note":{}}}}`,
		"helm/Apply/":                           `{"f:metadata":{"f:labels":{"f:app":{}}}}`,
		"kube-controller-manager/Update/status": `{"f:status":{"f:replicas":{}}}`,
		"old/Update/":                           `{"f:metadata":{"f:labels":{"f:team":{}}}}`,
	}
	if len(got) != len(want) {
		t.Errorf("entries: %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %s\nwant %s", k, got[k], v)
		}
	}
	if p := paths(prefs); strings.Join(p, " ") != ".metadata.labels.team .spec.replicas" {
		t.Errorf("prefixes = %q", p)
	}

	// The common path: nothing dropped, nothing changes, same entries.
	same := &unstructured.Unstructured{Object: doc(t, deployHead+"  labels: {app: app, team: red}\nspec:\n  replicas: 3\n")}
	if out, _, changed, err := takeOverDropped(mf, la, same, "kubectl"); err != nil || changed || &out[0] != &mf[0] {
		t.Errorf("nothing dropped: changed=%v err=%v", changed, err)
	}
	// No annotation, or one kubectl could not read: nothing to delete.
	for _, l := range []string{"", "{not json"} {
		if _, _, changed, err := takeOverDropped(mf, l, body, "kubectl"); err != nil || changed {
			t.Errorf("annotation %q: changed=%v err=%v", l, changed, err)
		}
	}
	// The applier's entry at another version: its paths could differ, leave it.
	other := append([]metav1.ManagedFieldsEntry{entry("kubectl", apply, "", "apps/v1beta2", `{}`)}, mf[1:]...)
	if _, _, changed, _ := takeOverDropped(other, la, body, "kubectl"); changed {
		t.Error("took fields into an entry of another version")
	}
	// No Apply entry yet (the object was created by kubectl create
	// --save-config and migrated elsewhere): one is made.
	out, _, changed, err = takeOverDropped(mf[1:2], la, body, "deployer")
	if err != nil || !changed || len(out) != 1 || out[0].Manager != "deployer" || out[0].Operation != apply ||
		out[0].APIVersion != "apps/v1" || string(out[0].FieldsV1.Raw) != `{"f:metadata":{"f:labels":{"f:team":{}}}}` {
		t.Fatalf("new entry: %+v changed=%v err=%v", out, changed, err)
	}
}

// TestRemovePaths: a dry run deletes the prefixes from its result.
func TestRemovePaths(t *testing.T) {
	d := doc(t, deployHead+`  labels: {app: app, team: red}
spec:
  replicas: 5
  template:
    spec:
      containers:
      - name: app
        ports: [{containerPort: 80, protocol: TCP}, {containerPort: 443, protocol: TCP}]
      - {name: side, image: s:2}
`)
	set := fieldpath.NewSet(
		fieldpath.MakePathOrDie("metadata", "labels", "team"),
		fieldpath.MakePathOrDie("spec", "replicas"),
		fieldpath.MakePathOrDie("spec", "template", "spec", "containers", fieldpath.KeyByFields("name", "side")),
		fieldpath.MakePathOrDie("spec", "template", "spec", "containers", fieldpath.KeyByFields("name", "app"),
			"ports", fieldpath.KeyByFields("containerPort", 443, "protocol", "TCP")),
		fieldpath.MakePathOrDie("spec", "nothere", "x"),
	)
	removePaths(d, set)
	got, _ := yaml.Marshal(d)
	want := `apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    app: app
  name: app
spec:
  template:
    spec:
      containers:
      - name: app
        ports:
        - containerPort: 80
          protocol: TCP
`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestNativeGroups: every group of kubectl's scheme (whose kinds kubectl
// patches with a strategic merge patch) is native; a CRD's group is not.
func TestNativeGroups(t *testing.T) {
	for gvk := range kubectlscheme.Scheme.AllKnownTypes() {
		if !nativeGroups[gvk.Group] {
			t.Errorf("group %q of kubectl's scheme (%s) is missing from nativeGroups", gvk.Group, gvk.Kind)
		}
	}
	for _, g := range []string{"cert-manager.io", "kustomize.toolkit.fluxcd.io", "gateway.networking.k8s.io"} {
		if nativeGroups[g] {
			t.Errorf("%s is a CRD's group", g)
		}
	}
}

// BenchmarkTakeOverDroppedNothing is the common path's cost: a Deployment
// re-applied with its controller's revision annotation and status
// entries, nothing dropped.
func BenchmarkTakeOverDroppedNothing(b *testing.B) {
	objs, err := Parse("d.yaml", []byte(deployHead+`  labels: {app: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: app
        image: registry.example.com/app:1
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
        ports: [{containerPort: 8080}]
`), nil)
	if err != nil {
		b.Fatal(err)
	}
	body := objs[0].Unstructured
	la, err := lastAppliedValue(body)
	if err != nil {
		b.Fatal(err)
	}
	mf := []metav1.ManagedFieldsEntry{
		entry("kubectl", metav1.ManagedFieldsOperationApply, "", "apps/v1", `{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{}}}`),
		entry("kube-controller-manager", metav1.ManagedFieldsOperationUpdate, "", "apps/v1", `{"f:metadata":{"f:annotations":{".":{},"f:deployment.kubernetes.io/revision":{}}}}`),
		entry("kube-controller-manager", metav1.ManagedFieldsOperationUpdate, "status", "apps/v1", `{"f:status":{"f:replicas":{}}}`),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, changed, err := takeOverDropped(mf, la, body, "kubectl"); err != nil || changed {
			b.Fatal(changed, err)
		}
	}
}
