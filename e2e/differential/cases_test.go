package differential

import (
	"fmt"
	"strings"
	"testing"
)

// deploy is a Deployment named app; extra is indented under its spec's
// pod template container, labels under metadata.labels.
func deploy(image string, replicas int, labels, env string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  labels:
    app: app
%s
spec:
  replicas: %d
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
      - name: app
        image: %s
%s
`, labels, replicas, image, env)
}

const envA = `        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}`

const envB = `        env:
        - {name: B, value: "2"}`

var (
	v1 = deploy("registry.example.com/app:1", 2, "    team: blue", envA)
	// v2: new image, env A and label team dropped from the manifest.
	v2 = deploy("registry.example.com/app:2", 2, "", envB)
	// v3: back to one env var less, replicas 3.
	v3 = deploy("registry.example.com/app:3", 3, "", "")
)

var (
	// noReplicas is v1 without replicas (an autoscaler's, or the default).
	noReplicas = strings.Replace(v1, "  replicas: 2\n", "", 1)
	// withSide is v1 with a sidecar container; v1 drops it.
	withSide = strings.Replace(v1, "      - name: app\n", "      - name: side\n        image: side:1\n      - name: app\n", 1)
	// teamOnly is a partial manifest another tool applies server-side.
	teamOnly = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  labels:\n    team: blue\n"
)

// widgetCRD defines Widget, a custom resource with a nested object and a
// keyed list (client-side apply sends custom resources JSON merge patches).
const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.dropped.ferry.test
spec:
  group: dropped.ferry.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              a: {type: integer}
              b:
                type: object
                properties:
                  x: {type: integer}
                  y: {type: integer}
              items:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    v: {type: string}
`

func widget(spec string) string {
	return "apiVersion: dropped.ferry.test/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n" + spec
}

const svc = `apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  selector: {app: app}
  ports:
  - {port: 80, targetPort: 8080}
`

func cm(name, data string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n%s\n", name, data)
}

func TestDifferential(t *testing.T) {
	for _, dc := range []diffCase{
		// Taking over from client-side apply.
		{name: "csa-then-ferry-drops-fields",
			files:   map[string]string{"v1.yaml": v1, "v2.yaml": v2, "v3.yaml": v3},
			steps:   []step{real("apply", "-f", "{dir}/v1.yaml"), job("apply", "-f", "{dir}/v2.yaml")},
			objects: []string{"deployment/app"}},
		{name: "csa-then-ferry-server-side",
			files:   map[string]string{"v1.yaml": v1, "v2.yaml": v2},
			steps:   []step{real("apply", "-f", "{dir}/v1.yaml"), job("apply", "--server-side", "-f", "{dir}/v2.yaml")},
			objects: []string{"deployment/app"}},
		{name: "ferry-then-back-to-csa",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2, "v3.yaml": v3},
			steps: []step{real("apply", "-f", "{dir}/v1.yaml"), job("apply", "-f", "{dir}/v2.yaml"),
				real("apply", "-f", "{dir}/v3.yaml")},
			objects: []string{"deployment/app"}},
		{name: "server-side-then-back-to-csa",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2, "v3.yaml": v3},
			steps: []step{real("apply", "-f", "{dir}/v1.yaml"), job("apply", "--server-side", "-f", "{dir}/v2.yaml"),
				real("apply", "-f", "{dir}/v3.yaml")},
			objects: []string{"deployment/app"}},
		// Plain apply after imperative changes.
		{name: "scale-then-apply-same",
			files: map[string]string{"v1.yaml": v1},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"), real("scale", "deployment/app", "--replicas=5", "-n", "{ns}"),
				job("apply", "-f", "{dir}/v1.yaml")},
			objects: []string{"deployment/app"}},
		{name: "scale-then-apply-changed-replicas",
			files: map[string]string{"v1.yaml": v1, "v3.yaml": v3},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"), real("scale", "deployment/app", "--replicas=5", "-n", "{ns}"),
				job("apply", "-f", "{dir}/v3.yaml")},
			objects: []string{"deployment/app"}},
		{name: "set-image-then-apply",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"), real("set", "image", "deployment/app", "app=other:9", "-n", "{ns}"),
				job("apply", "-f", "{dir}/v1.yaml"), job("apply", "-f", "{dir}/v2.yaml")},
			objects: []string{"deployment/app"}},
		{name: "patch-annotate-label-then-apply",
			files: map[string]string{"v1.yaml": v1},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"),
				real("patch", "deployment/app", "-n", "{ns}", "-p", `{"spec":{"replicas":4,"template":{"spec":{"containers":[{"name":"app","image":"patched:1"}]}}}}`),
				real("annotate", "deployment/app", "-n", "{ns}", "note=hi"),
				real("label", "deployment/app", "-n", "{ns}", "team=red", "--overwrite"),
				job("apply", "-f", "{dir}/v1.yaml")},
			objects: []string{"deployment/app"}},
		{name: "edit-then-apply",
			files: map[string]string{"v1.yaml": v1},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"),
				real("edit", "deployment/app", "-n", "{ns}").withEnv("KUBE_EDITOR=sed -i -e 's/replicas: 2/replicas: 7/'"),
				job("apply", "-f", "{dir}/v1.yaml")},
			objects: []string{"deployment/app"}},
		{name: "create-then-apply",
			files:   map[string]string{"v1.yaml": v1, "v2.yaml": v2},
			steps:   []step{real("create", "-f", "{dir}/v1.yaml"), job("apply", "-f", "{dir}/v2.yaml")},
			objects: []string{"deployment/app"}},
		{name: "server-side-keeps-conflicts",
			files: map[string]string{"v1.yaml": v1, "v3.yaml": v3},
			steps: []step{job("apply", "--server-side", "-f", "{dir}/v1.yaml"), real("scale", "deployment/app", "--replicas=5", "-n", "{ns}"),
				job("apply", "--server-side", "-f", "{dir}/v3.yaml"), job("apply", "--server-side", "--force-conflicts", "-f", "{dir}/v3.yaml")},
			objects: []string{"deployment/app"}},
		// A field another manager took over, then dropped from the
		// manifest: kubectl's three-way patch deletes every field of the
		// last-applied configuration the manifest no longer has.
		{name: "label-overwrite-then-dropped",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"), real("label", "deployment/app", "team=red", "--overwrite", "-n", "{ns}"),
				real("annotate", "deployment/app", "note=kept", "-n", "{ns}"), job("apply", "-f", "{dir}/v2.yaml")},
			objects: []string{"deployment/app"}},
		{name: "scale-then-replicas-dropped",
			files: map[string]string{"v1.yaml": v1, "norep.yaml": noReplicas},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"), real("scale", "deployment/app", "--replicas=5", "-n", "{ns}"),
				job("apply", "-f", "{dir}/norep.yaml")},
			objects: []string{"deployment/app"}},
		{name: "edit-then-replicas-dropped",
			files: map[string]string{"v1.yaml": v1, "norep.yaml": noReplicas},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"),
				real("edit", "deployment/app", "-n", "{ns}").withEnv("KUBE_EDITOR=sed -i -e 's/replicas: 2/replicas: 7/'"),
				job("apply", "-f", "{dir}/norep.yaml")},
			objects: []string{"deployment/app"}},
		{name: "set-env-then-env-dropped",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"), real("set", "env", "deployment/app", "A=changed", "-n", "{ns}"),
				job("apply", "-f", "{dir}/v2.yaml")},
			objects: []string{"deployment/app"}},
		{name: "set-image-then-sidecar-dropped",
			files: map[string]string{"side.yaml": withSide, "v1.yaml": v1},
			steps: []step{job("apply", "-f", "{dir}/side.yaml"), real("set", "image", "deployment/app", "side=side:2", "-n", "{ns}"),
				job("apply", "-f", "{dir}/v1.yaml")},
			objects: []string{"deployment/app"}},
		{name: "patch-then-label-map-dropped",
			files: map[string]string{"v1.yaml": v1, "nolabels.yaml": strings.Replace(v1, "  labels:\n    app: app\n    team: blue\n", "", 1)},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"),
				real("patch", "deployment/app", "-n", "{ns}", "-p", `{"metadata":{"labels":{"team":"green","extra":"x"}}}`),
				job("apply", "-f", "{dir}/nolabels.yaml")},
			objects: []string{"deployment/app"}},
		{name: "co-owned-after-takeover-from-csa",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2, "team.yaml": teamOnly},
			steps: []step{real("apply", "-f", "{dir}/v1.yaml"),
				real("apply", "--server-side", "--field-manager=helm", "-f", "{dir}/team.yaml"),
				job("apply", "-f", "{dir}/v2.yaml")},
			objects: []string{"deployment/app"}},
		{name: "dry-run-and-diff-show-dropped-fields",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2, "norep.yaml": noReplicas},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml"), real("label", "deployment/app", "team=red", "--overwrite", "-n", "{ns}"),
				real("scale", "deployment/app", "--replicas=5", "-n", "{ns}"),
				job("apply", "--dry-run=server", "-o", "json", "-f", "{dir}/v2.yaml").printed(),
				job("apply", "--dry-run=server", "-o", "json", "-f", "{dir}/norep.yaml").printed(),
				job("diff", "-f", "{dir}/v2.yaml")},
			objects: []string{"deployment/app"}},
		{name: "custom-resource-patch-then-dropped",
			files: map[string]string{"crd.yaml": widgetCRD,
				"w1.yaml": widget("  a: 1\n  b: {x: 1, y: 1}\n  items: [{name: one, v: '1'}, {name: two, v: '2'}]\n"),
				"w2.yaml": widget("  b: {x: 1}\n  items: [{name: one, v: '1'}]\n")},
			steps: []step{real("apply", "-f", "{dir}/crd.yaml"),
				real("wait", "--for=condition=Established", "customresourcedefinition/widgets.dropped.ferry.test"),
				job("apply", "-f", "{dir}/w1.yaml"),
				real("patch", "widget/w", "-n", "{ns}", "--type=merge", "-p", `{"spec":{"a":7,"b":{"y":5}}}`),
				job("apply", "-f", "{dir}/w2.yaml")},
			objects: []string{"widget/w"}},
		{name: "custom-resource-list-item-added-by-other",
			files: map[string]string{"crd.yaml": widgetCRD, "w.yaml": widget("  items: [{name: one, v: '1'}]\n")},
			steps: []step{real("apply", "-f", "{dir}/crd.yaml"),
				real("wait", "--for=condition=Established", "customresourcedefinition/widgets.dropped.ferry.test"),
				job("apply", "-f", "{dir}/w.yaml"),
				real("patch", "widget/w", "-n", "{ns}", "--type=json", "-p", `[{"op":"add","path":"/spec/items/-","value":{"name":"three","v":"3"}}]`),
				job("apply", "-f", "{dir}/w.yaml")},
			objects: []string{"widget/w"}},
		// --server-side keeps server-side semantics: a field another
		// manager took stays when the manifest drops it, and setting it
		// again is a conflict.
		{name: "server-side-keeps-taken-fields",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2},
			steps: []step{job("apply", "--server-side", "-f", "{dir}/v1.yaml"), real("label", "deployment/app", "team=red", "--overwrite", "-n", "{ns}"),
				real("scale", "deployment/app", "--replicas=5", "-n", "{ns}"),
				job("apply", "--server-side", "-f", "{dir}/v2.yaml"), job("apply", "--server-side", "-f", "{dir}/v1.yaml")},
			objects: []string{"deployment/app"}},
		// The same object twice in one apply: in order, the last wins.
		{name: "same-object-twice",
			files:   map[string]string{"dup.yaml": cm("dup", "  k: first\n  a: x") + "---\n" + cm("dup", "  k: second") + "---\n" + cm("other", "  k: v") + "---\n" + cm("dup", "  k: third\n  b: y")},
			steps:   []step{job("apply", "-f", "{dir}/dup.yaml"), job("apply", "-f", "{dir}/dup.yaml")},
			objects: []string{"configmap/dup", "configmap/other"}},
		// Flags.
		{name: "url",
			files:   map[string]string{"remote/app.yaml": v1},
			steps:   []step{job("apply", "-f", "{url}/remote/app.yaml"), job("apply", "-f", "{url}/remote/missing.yaml")},
			objects: []string{"deployment/app"}},
		{name: "validate",
			files: map[string]string{"bad.yaml": cm("val", "  k: v") + "bogus: 1\n"},
			steps: []step{job("apply", "-f", "{dir}/bad.yaml"), job("apply", "--validate=strict", "-f", "{dir}/bad.yaml"),
				job("apply", "--validate=warn", "-f", "{dir}/bad.yaml"), job("apply", "--validate=false", "-f", "{dir}/bad.yaml")},
			objects:            []string{"configmap/val"},
			lastAppliedDiffers: "ferry drops the unknown field before applying, so the annotation the API server keeps lacks it; kubectl's keeps it"},
		{name: "diff-exit-codes",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2, "broken.yaml": "kind: [\n"},
			steps: []step{job("diff", "-f", "{dir}/v1.yaml"), job("apply", "-f", "{dir}/v1.yaml"), job("diff", "-f", "{dir}/v1.yaml"),
				job("diff", "-f", "{dir}/v2.yaml"), job("diff", "-f", "{dir}/broken.yaml"), job("diff", "-f", "{dir}/nothere.yaml")},
			objects: []string{"deployment/app"}},
		{name: "dry-runs-over-kubectl-applied",
			files: map[string]string{"v1.yaml": v1, "v2.yaml": v2},
			steps: []step{real("apply", "-f", "{dir}/v1.yaml"), job("apply", "--dry-run=server", "-f", "{dir}/v2.yaml"),
				job("apply", "--dry-run=client", "-f", "{dir}/v2.yaml"), job("apply", "--server-side", "--dry-run=server", "-f", "{dir}/v2.yaml"),
				job("apply", "--server-side", "--dry-run=client", "-f", "{dir}/v2.yaml"),
				// The result shows client-side apply's fields dropped, unmigrated.
				job("apply", "--dry-run=server", "-o", "json", "-f", "{dir}/v2.yaml").printed()},
			objects: []string{"deployment/app"}},
		// Inputs.
		{name: "kustomize",
			files: map[string]string{"k/kustomization.yaml": "namePrefix: p-\ncommonLabels: {env: prod}\nresources: [svc.yaml, cm.yaml]\n",
				"k/svc.yaml": svc, "k/cm.yaml": cm("conf", "  k: v")},
			steps:   []step{job("apply", "-k", "{dir}/k"), job("apply", "-k", "{dir}/k")},
			objects: []string{"service/p-app", "configmap/p-conf"}},
		{name: "stdin",
			steps:   []step{job("apply", "-f", "-").withStdin(cm("from-stdin", "  k: v")), job("apply", "-n", "{ns}", "-f", "-").withStdin(svc)},
			objects: []string{"configmap/from-stdin", "service/app"}},
		// A custom resource from stdin: the job's small kubectl reads it,
		// finds a kind only discovery maps and hands the command, with what
		// it read, to the engine (docs/kubectl.md, "Two kubectl binaries").
		{name: "stdin-custom-resource",
			files: map[string]string{"crd.yaml": widgetCRD},
			steps: []step{real("apply", "-f", "{dir}/crd.yaml"),
				real("wait", "--for=condition=Established", "customresourcedefinition/widgets.dropped.ferry.test"),
				job("apply", "-f", "-").withStdin(cm("before-widget", "  k: v") + "---\n" + widget("  a: 1\n"))},
			objects: []string{"configmap/before-widget", "widget/w"}},
		{name: "list-kinds",
			files: map[string]string{"list.yaml": "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: l1}\n  data: {k: v}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: l2}\n  data: {k: w}\n",
				"cmlist.json": `{"apiVersion":"v1","kind":"ConfigMapList","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"l3"},"data":{"k":"x"}}]}`},
			steps:   []step{job("apply", "-f", "{dir}/list.yaml", "-f", "{dir}/cmlist.json")},
			objects: []string{"configmap/l1", "configmap/l2", "configmap/l3"}},
		{name: "secret-stringdata",
			files: map[string]string{"s1.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  user: admin\n  pass: one\n",
				"s2.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  user: admin\n",
				"s3.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  user: cm9vdA==\n"},
			steps:   []step{job("apply", "-f", "{dir}/s1.yaml"), job("apply", "-f", "{dir}/s2.yaml"), job("apply", "-f", "{dir}/s3.yaml")},
			objects: []string{"secret/s"}},
		{name: "namespace-mismatch",
			files:   map[string]string{"other.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m\n  namespace: {ns2}\ndata: {k: v}\n"},
			steps:   []step{job("apply", "-n", "{ns}", "-f", "{dir}/other.yaml"), job("apply", "-n", "{ns2}", "-f", "{dir}/other.yaml")},
			objects: []string{"configmap/m -n {ns2}", "configmap/m"}},
		// Prune.
		{name: "applyset-prune",
			files: map[string]string{"one/a.yaml": cm("a", "  k: v"), "one/b.yaml": cm("b", "  k: v"), "two/a.yaml": cm("a", "  k: w")},
			steps: []step{job("apply", "--prune", "--applyset=set1", "-f", "{dir}/one"), job("apply", "--prune", "--applyset=set1", "-f", "{dir}/two"),
				job("apply", "--prune", "--applyset=set1", "-l", "x=y", "-f", "{dir}/two"), job("apply", "--applyset=set1", "-f", "{dir}/two")},
			objects: []string{"configmap/a", "configmap/b", "secret/set1"}},
		{name: "applyset-kubectl-then-ferry",
			files: map[string]string{"one/a.yaml": cm("a", "  k: v"), "one/b.yaml": cm("b", "  k: v"), "two/a.yaml": cm("a", "  k: w")},
			steps: []step{real("apply", "--prune", "--applyset=configmaps/set2", "-f", "{dir}/one"),
				job("apply", "--prune", "--applyset=configmaps/set2", "-f", "{dir}/two"),
				real("apply", "--prune", "--applyset=configmaps/set2", "-f", "{dir}/one")},
			objects: []string{"configmap/a", "configmap/b", "configmap/set2"}},
		{name: "label-prune",
			files: map[string]string{"one/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: {app: x}\n",
				"one/b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  labels: {app: x}\n",
				"one/c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {app: other}\n",
				"two/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: {app: x}\n"},
			steps: []step{job("apply", "-f", "{dir}/one"), real("create", "configmap", "manual", "-n", "{ns}"), real("label", "configmap/manual", "app=x", "-n", "{ns}"),
				job("apply", "--prune", "-l", "app=x", "-f", "{dir}/two"), job("apply", "--prune", "-f", "{dir}/two")},
			objects: []string{"configmap/a", "configmap/b", "configmap/c", "configmap/manual"}},
		// Server errors print as kubectl prints them: the reason in
		// parentheses and the words scripts grep for. Over an existing
		// object kubectl's patch gets a 422 quoting the whole object
		// ("The request is invalid: patch: Invalid value: "map[...]":
		// strict decoding error: unknown field ..."); ferry says the
		// BadRequest of the create, the same words without the object.
		{name: "unknown-field",
			files: map[string]string{"unknown.yaml": strings.Replace(v1, "  replicas: 2\n", "  replicaz: 2\n", 1), "v1.yaml": v1},
			steps: []step{
				job("apply", "-f", "{dir}/unknown.yaml").saying(`Error from server (BadRequest): error when `, `strict decoding error: unknown field "spec.replicaz"`),
				job("apply", "-f", "{dir}/v1.yaml"),
				job("apply", "-f", "{dir}/unknown.yaml").mentioning(`strict decoding error: unknown field "spec.replicaz"`)},
			objects: []string{"deployment/app"}},
		{name: "invalid-value",
			files:   map[string]string{"neg.yaml": strings.Replace(v1, "  replicas: 2\n", "  replicas: -1\n", 1)},
			steps:   []step{job("apply", "-f", "{dir}/neg.yaml").saying(`The Deployment "app" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0`)},
			objects: []string{"deployment/app"}},
		{name: "namespace-not-found",
			files:   map[string]string{"cm.yaml": cm("c", "  k: v")},
			steps:   []step{job("apply", "-n", "{ns}-none", "-f", "{dir}/cm.yaml").saying(`Error from server (NotFound): error when `, `namespaces "`, `-none" not found`)},
			objects: []string{"configmap/c"}},
		{name: "delete-then-apply",
			files: map[string]string{"v1.yaml": v1, "svc.yaml": svc},
			steps: []step{job("apply", "-f", "{dir}/v1.yaml", "-f", "{dir}/svc.yaml"), job("delete", "-f", "{dir}/v1.yaml"),
				job("apply", "-f", "{dir}/v1.yaml", "-f", "{dir}/svc.yaml")},
			objects: []string{"deployment/app", "service/app"}},
	} {
		t.Run(dc.name, func(t *testing.T) {
			// Every path is relative to the run's directory and namespace.
			for i := range dc.steps {
				if dc.steps[i].args[0] != "create" || dc.steps[i].args[1] != "namespace" {
					dc.steps[i].args = append(dc.steps[i].args, defaultNS(dc.steps[i].args)...)
				}
			}
			check(t, dc)
		})
	}
}

// defaultNS adds -n {ns} to a step that names no namespace, so each run
// stays in its own.
func defaultNS(args []string) []string {
	for _, a := range args {
		if a == "-n" || a == "--namespace" {
			return nil
		}
	}
	return []string{"-n", "{ns}"}
}
