package apply_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// requestLog records the requests made through a config: "METHOD
// content-type [dryRun]" each.
type requestLog struct {
	mu   sync.Mutex
	reqs []string
}

func (l *requestLog) config(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			s := r.Method
			if ct := r.Header.Get("Content-Type"); r.Method != http.MethodGet && ct != "" {
				s += " " + ct
			}
			if r.URL.Query().Get("dryRun") != "" {
				s += " dryRun"
			}
			l.mu.Lock()
			l.reqs = append(l.reqs, s)
			l.mu.Unlock()
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

// take returns the requests recorded since the last call.
func (l *requestLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.reqs
	l.reqs = nil
	return r
}

func wantRequests(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s: requests\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestDroppedFieldsTakenByOthers: a plain apply removes the fields the
// manifest drops from its last-applied configuration even when another
// manager took them (client-side apply's three-way patch does), keeps a
// field that was never in the manifest, shows the same in a server dry
// run without changing anything, and costs one request more only when
// there is such a field.
func TestDroppedFieldsTakenByOthers(t *testing.T) {
	var log requestLog
	a := newApplier(t, log.config(adminConfig(t)), "")
	ns := newNamespace(t, a)
	log.take()
	ctx := context.Background()
	cm := func(labels, data string) []*apply.Object {
		return parse(t, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d\n  labels: {"+labels+"}\ndata: {"+data+"}\n")
	}
	get := func() map[string]any {
		t.Helper()
		u, err := a.Dynamic().Resource(cmGVR).Namespace(ns).Get(ctx, "d", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return u.Object
	}
	const (
		getReq   = "GET"
		applyReq = "PATCH application/apply-patch+yaml"
		jsonReq  = "PATCH application/json-patch+json"
	)

	_, out, _ := run(t, a, cm("app: x, team: blue", "a: '1', b: '2', c: '3'"), apply.ApplyOptions{Namespace: ns})
	wantLines(t, "create", out, "configmap/d created")
	wantRequests(t, "create", log.take(), getReq, applyReq)

	// The common path: a field only ferry manages is dropped. No extra request.
	_, out, _ = run(t, a, cm("app: x, team: blue", "a: '1', b: '2'"), apply.ApplyOptions{Namespace: ns})
	wantLines(t, "drop own field", out, "configmap/d configured")
	wantRequests(t, "drop own field", log.take(), getReq, applyReq)
	if _, ok := get()["data"].(map[string]any)["c"]; ok {
		t.Fatal("data.c stayed")
	}

	// Others take fields: kubectl label --overwrite, kubectl edit, kubectl annotate.
	for mgr, patch := range map[string]string{
		"kubectl-label":    `{"metadata":{"labels":{"team":"red"}}}`,
		"kubectl-edit":     `{"data":{"b":"edited"}}`,
		"kubectl-annotate": `{"metadata":{"annotations":{"note":"kept"}}}`,
	} {
		if _, err := a.Dynamic().Resource(cmGVR).Namespace(ns).Patch(ctx, "d", types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: mgr}); err != nil {
			t.Fatal(err)
		}
	}
	log.take()
	v2 := func() []*apply.Object { return cm("app: x", "a: '1'") }

	// A server dry run shows them gone and changes nothing.
	res, out, errOut := run(t, a, v2(), apply.ApplyOptions{Namespace: ns, DryRun: apply.DryRunServer})
	wantLines(t, "dry run", out, "configmap/d configured (server dry run)")
	if errOut != "" {
		t.Fatalf("dry run stderr: %s", errOut)
	}
	wantRequests(t, "dry run", log.take(), getReq, applyReq+" dryRun", "PUT application/json dryRun")
	dry := res.Items[0].Live.Object
	if l := dry["metadata"].(map[string]any)["labels"].(map[string]any); l["team"] != nil || l["app"] != "x" {
		t.Fatalf("dry-run labels = %v", l)
	}
	if d := dry["data"].(map[string]any); d["b"] != nil || d["a"] != "1" {
		t.Fatalf("dry-run data = %v", d)
	}
	if dry["metadata"].(map[string]any)["annotations"].(map[string]any)["note"] != "kept" {
		t.Fatal("dry run removed an annotation that was never in the manifest")
	}
	live := get()
	if live["metadata"].(map[string]any)["labels"].(map[string]any)["team"] != "red" || live["data"].(map[string]any)["b"] != "edited" {
		t.Fatalf("the dry run changed the object: %v", live)
	}

	// The apply removes them: one managedFields patch more.
	log.take()
	_, out, _ = run(t, a, v2(), apply.ApplyOptions{Namespace: ns})
	wantLines(t, "drop taken fields", out, "configmap/d configured")
	wantRequests(t, "drop taken fields", log.take(), getReq, jsonReq, applyReq)
	live = get()
	md := live["metadata"].(map[string]any)
	if l := md["labels"].(map[string]any); len(l) != 1 || l["app"] != "x" {
		t.Fatalf("labels = %v", l)
	}
	if d := live["data"].(map[string]any); len(d) != 1 || d["a"] != "1" {
		t.Fatalf("data = %v", d)
	}
	if md["annotations"].(map[string]any)["note"] != "kept" {
		t.Fatal("an annotation that was never in the manifest was removed")
	}
	for _, e := range md["managedFields"].([]any) {
		if m := e.(map[string]any)["manager"]; m == "kubectl-label" || m == "kubectl-edit" {
			t.Fatalf("%s still has an entry: %v", m, md["managedFields"])
		}
	}

	// Back to the common path.
	log.take()
	_, out, _ = run(t, a, v2(), apply.ApplyOptions{Namespace: ns})
	wantLines(t, "re-apply", out, "configmap/d unchanged")
	wantRequests(t, "re-apply", log.take(), getReq, applyReq)

	// --server-side: nothing taken, the field stays.
	if _, err := a.Dynamic().Resource(cmGVR).Namespace(ns).Patch(ctx, "d", types.MergePatchType, []byte(`{"data":{"a":"scaled"}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	log.take()
	_, out, _ = run(t, a, cm("app: x", ""), apply.ApplyOptions{Namespace: ns, ServerSide: true})
	wantLines(t, "server-side", out, "configmap/d serverside-applied")
	wantRequests(t, "server-side", log.take(), applyReq)
	if get()["data"].(map[string]any)["a"] != "scaled" {
		t.Fatal("--server-side removed a field another manager owns")
	}
}
