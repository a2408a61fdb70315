package kubectl

import (
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func obj(t *testing.T, js string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(js)); err != nil {
		t.Fatal(err)
	}
	return u
}

func live(t *testing.T, js, group, resource string) liveObj {
	u := obj(t, js)
	return liveObj{obj: u, mapping: &meta.RESTMapping{
		Resource:         schema.GroupVersionResource{Group: group, Version: "v1", Resource: resource},
		GroupVersionKind: u.GroupVersionKind(), Scope: meta.RESTScopeNamespace}}
}

const webDeployment = `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default"},
 "spec":{"template":{"metadata":{"annotations":{"keep":"me"}},"spec":{
  "initContainers":[{"name":"init","image":"busybox:1"}],
  "containers":[{"name":"app","image":"app:1"},{"name":"side","image":"nginx:1"}]}}}}`

// The patch names only the changed containers by their merge key, the
// returned copy has every requested image and the live object is untouched.
func TestSetImagesPatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		js      string
		updates []imageUpdate
		patch   string // "" when nothing changes
		missing []string
		images  string // init containers then containers of the copy
	}{
		{"one container", webDeployment, []imageUpdate{{"app", "app:2"}},
			`{"spec":{"template":{"spec":{"containers":[{"image":"app:2","name":"app"}]}}}}`, nil, "busybox:1 app:2 nginx:1"},
		{"init container", webDeployment, []imageUpdate{{"init", "busybox:2"}},
			`{"spec":{"template":{"spec":{"initContainers":[{"image":"busybox:2","name":"init"}]}}}}`, nil, "busybox:2 app:1 nginx:1"},
		{"unchanged", webDeployment, []imageUpdate{{"app", "app:1"}}, "", nil, "busybox:1 app:1 nginx:1"},
		{"wildcard", webDeployment, []imageUpdate{{"*", "x:1"}},
			`{"spec":{"template":{"spec":{"containers":[{"image":"x:1","name":"app"},{"image":"x:1","name":"side"}],"initContainers":[{"image":"x:1","name":"init"}]}}}}`, nil, "x:1 x:1 x:1"},
		{"one missing, one found", webDeployment, []imageUpdate{{"nope", "x:1"}, {"side", "nginx:2"}},
			`{"spec":{"template":{"spec":{"containers":[{"image":"nginx:2","name":"side"}]}}}}`, []string{`error: unable to find container named "nope"`}, "busybox:1 app:1 nginx:2"},
		{"cronjob", `{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"c"},"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"job","image":"job:1"}]}}}}}}`,
			[]imageUpdate{{"job", "job:2"}}, `{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"image":"job:2","name":"job"}]}}}}}}`, nil, " job:2"},
		{"pod", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"c:1"}]}}`,
			[]imageUpdate{{"c", "c:2"}}, `{"spec":{"containers":[{"image":"c:2","name":"c"}]}}`, nil, " c:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := live(t, tc.js, "apps", "deployments")
			before, _ := json.Marshal(o.obj.Object)
			changed, patch, missing, err := setImages(o, tc.updates)
			if err != nil {
				t.Fatal(err)
			}
			if string(patch) != tc.patch {
				t.Errorf("patch %s, want %s", patch, tc.patch)
			}
			var msgs []string
			for _, m := range missing {
				msgs = append(msgs, m.Error())
			}
			if strings.Join(msgs, "|") != strings.Join(tc.missing, "|") {
				t.Errorf("missing %q, want %q", msgs, tc.missing)
			}
			path := podSpecPath(o.obj.GetKind())
			var images []string
			for _, list := range []string{"initContainers", "containers"} {
				cs, _, _ := unstructured.NestedSlice(changed.Object, append(append([]string{}, path...), list)...)
				var l []string
				for _, c := range cs {
					l = append(l, c.(map[string]any)["image"].(string))
				}
				images = append(images, strings.Join(l, " "))
			}
			if got := strings.Join(images, " "); got != tc.images {
				t.Errorf("copy has images %q, want %q", got, tc.images)
			}
			if after, _ := json.Marshal(o.obj.Object); string(after) != string(before) {
				t.Errorf("the live object was modified:\n%s\n%s", before, after)
			}
		})
	}
	svc := live(t, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"kubernetes"}}`, "", "services")
	if _, _, _, err := setImages(svc, []imageUpdate{{"a", "b"}}); err == nil || err.Error() != "error: services/kubernetes the object is not a pod or does not have a pod template: *v1.Service" {
		t.Errorf("service: %v", err)
	}
}

func TestSplitImageArgs(t *testing.T) {
	for _, tc := range []struct {
		args, resources []string
		updates         []imageUpdate
		err             string
	}{
		{[]string{"deployment/web", "app=app:2", "side=registry:5000/x:1"}, []string{"deployment/web"}, []imageUpdate{{"app", "app:2"}, {"side", "registry:5000/x:1"}}, ""},
		{[]string{"deployment", "web", "app="}, []string{"deployment", "web"}, []imageUpdate{{"app", ""}}, ""},
		{[]string{"deployment/web", "app=x", "deployment/other"}, nil, nil, "all resources must be specified before image changes: deployment/other"},
		{[]string{"deployment/web", "app-"}, nil, nil, "invalid image format: app-"},
		{[]string{"app=x"}, nil, []imageUpdate{{"app", "x"}}, ""},
	} {
		res, upd, err := splitImageArgs(tc.args)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(res, ",") != strings.Join(tc.resources, ",") || len(upd) != len(tc.updates) {
			t.Errorf("%v: %v %v %v", tc.args, res, upd, err)
			continue
		}
		for i := range upd {
			if upd[i] != tc.updates[i] {
				t.Errorf("%v: update %d is %v, want %v", tc.args, i, upd[i], tc.updates[i])
			}
		}
	}
	if err := checkImageUpdates(nil); err == nil || err.Error() != "at least one image update is required" {
		t.Errorf("no updates: %v", err)
	}
	if err := checkImageUpdates([]imageUpdate{{"a", "1"}, {"*", "2"}}); err == nil || !strings.Contains(err.Error(), "all containers are already specified by *") {
		t.Errorf("* with another: %v", err)
	}
}

func TestRestartPatch(t *testing.T) {
	const now = "2026-01-02T03:04:05Z"
	p, err := restartPatch(live(t, webDeployment, "apps", "deployments"), now)
	if err != nil || string(p) != `{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-02T03:04:05Z"}}}}}` {
		t.Errorf("deployment: %s %v", p, err)
	}
	for _, kind := range []string{"StatefulSet", "DaemonSet"} {
		if _, err := restartPatch(live(t, `{"apiVersion":"apps/v1","kind":"`+kind+`","metadata":{"name":"x"}}`, "apps", "x"), now); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
	for _, tc := range []struct{ js, group, resource, want string }{
		{`{"apiVersion":"v1","kind":"Service","metadata":{"name":"kubernetes"}}`, "", "services", `error: services "kubernetes" restarting is not supported`},
		{`{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"rs"}}`, "apps", "replicasets", `error: replicasets.apps "rs" restarting is not supported`},
		{`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"p"},"spec":{"paused":true}}`, "apps", "deployments", `error: deployments.apps "p" can't restart paused deployment (run rollout resume first)`},
		{`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"twice"},"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"` + now + `"}}}}}`, "apps", "deployments",
			"failed to create patch for twice: if restart has already been triggered within the past second, please wait before attempting to trigger another"},
	} {
		if _, err := restartPatch(live(t, tc.js, tc.group, tc.resource), now); err == nil || err.Error() != tc.want {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
