package apply_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/pkg/apply"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

func TestDiff(t *testing.T) {
	a := newApplier(t, adminConfig(t), "")
	ns := newNamespace(t, a)
	ctx := context.Background()
	cm := func(v string) []*apply.Object {
		return parse(t, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d\ndata:\n  k: "+v+"\n")
	}
	var out, errOut bytes.Buffer
	dr, err := a.Diff(ctx, cm("v1"), apply.DiffOptions{Namespace: ns, Out: &out, ErrOut: &errOut})
	if err != nil || !dr.Changed || dr.Err() != nil {
		t.Fatalf("diff of a new object: %v changed=%v %s", err, dr.Changed, errOut.String())
	}
	if !strings.Contains(out.String(), "+++ merged/v1.ConfigMap."+ns+".d\n") || !strings.Contains(out.String(), "+  k: v1\n") {
		t.Fatalf("diff:\n%s", out.String())
	}
	run(t, a, cm("v1"), apply.ApplyOptions{Namespace: ns})
	out.Reset()
	dr, err = a.Diff(ctx, cm("v1"), apply.DiffOptions{Namespace: ns, Out: &out})
	if err != nil || dr.Changed || out.Len() != 0 {
		t.Fatalf("diff of an unchanged object: %v changed=%v\n%s", err, dr.Changed, out.String())
	}
	dr, err = a.Diff(ctx, cm("v2"), apply.DiffOptions{Namespace: ns, Out: &out})
	if err != nil || !dr.Changed {
		t.Fatalf("diff of a change: %v", err)
	}
	if !strings.Contains(out.String(), "-  k: v1\n+  k: v2\n") || strings.Contains(out.String(), "managedFields") || strings.Contains(out.String(), "resourceVersion") {
		t.Fatalf("diff:\n%s", out.String())
	}
	live, _ := a.Dynamic().Resource(cmGVR).Namespace(ns).Get(ctx, "d", metav1.GetOptions{})
	if live.Object["data"].(map[string]any)["k"] != "v1" {
		t.Fatal("diff changed the object")
	}
}

func TestWaitReadyAndTimeout(t *testing.T) {
	a := newApplier(t, adminConfig(t), "")
	ns := newNamespace(t, a)
	ctx := context.Background()
	cms := parse(t, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\n")
	run(t, a, cms, apply.ApplyOptions{Namespace: ns})
	var progress bytes.Buffer
	if err := a.Wait(ctx, cms, 10*time.Second, &progress); err != nil {
		t.Fatalf("wait for a ConfigMap: %v", err)
	}
	if !strings.Contains(progress.String(), "configmap/w: Current: Resource is always ready") {
		t.Fatalf("progress:\n%s", progress.String())
	}
	// The harness simulates the rollout: the Deployment goes InProgress, then Current.
	deploy := read(t, apply.ReadOptions{Filenames: []string{filepath.Join(manifests, "seed", "deployment.yaml")}})
	run(t, a, deploy, apply.ApplyOptions{Namespace: ns})
	progress.Reset()
	if err := a.Wait(ctx, deploy, 20*time.Second, &progress); err != nil {
		t.Fatalf("wait for a rollout: %v\n%s", err, progress.String())
	}
	if !strings.Contains(progress.String(), "deployment.apps/shark-app: Current: ") {
		t.Fatalf("progress:\n%s", progress.String())
	}
	// With the never-ready annotation the rollout never completes.
	deploy[0].SetAnnotations(map[string]string{cluster.NeverReadyAnnotation: "true"})
	deploy[0].Object["spec"].(map[string]any)["replicas"] = int64(2)
	run(t, a, deploy, apply.ApplyOptions{Namespace: ns})
	progress.Reset()
	start := time.Now()
	err := a.Wait(ctx, deploy, 1500*time.Millisecond, &progress)
	if err == nil || !strings.HasPrefix(err.Error(), "timed out waiting for deployment.apps/shark-app: InProgress: ") {
		t.Fatalf("wait err = %v\n%s", err, progress.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout not honoured: %s", d)
	}
	if !strings.Contains(progress.String(), "deployment.apps/shark-app: InProgress: ") {
		t.Fatalf("progress:\n%s", progress.String())
	}
}

// countingConfig counts the discovery requests made through cfg.
func countingConfig(cfg *rest.Config, n *atomic.Int64) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path == "/api" || r.URL.Path == "/apis" || strings.Count(r.URL.Path, "/") <= 3 && strings.HasPrefix(r.URL.Path, "/apis/") {
				n.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestDiscoveryDiskCache(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "cache", "discovery")
	var cold, warm atomic.Int64
	a := newApplier(t, countingConfig(adminConfig(t), &cold), cache)
	ns := newNamespace(t, a)
	// Built-in kinds at their GA versions are mapped without discovery;
	// a Lease is not among them.
	lease := "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: %s\n"
	if res, _, errOut := run(t, a, parse(t, "lease.yaml", fmt.Sprintf(lease, "l1")), apply.ApplyOptions{Namespace: ns}); res.Err() != nil {
		t.Fatal(errOut)
	}
	if cold.Load() == 0 {
		t.Fatal("a cold cache made no discovery request")
	}
	entries, err := os.ReadDir(cache)
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache dir: %v %v", err, entries)
	}
	st, _ := os.Stat(filepath.Join(cache, entries[0].Name()))
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir mode %v", st.Mode().Perm())
	}
	// A new applier (a new job) reads discovery from the disk.
	b := newApplier(t, countingConfig(adminConfig(t), &warm), cache)
	_, out, _ := run(t, b, parse(t, "lease.yaml", fmt.Sprintf(lease, "l2")), apply.ApplyOptions{Namespace: ns})
	wantLines(t, "warm apply", out, "lease.coordination.k8s.io/l2 created")
	if warm.Load() != 0 {
		t.Fatalf("a warm cache made %d discovery requests", warm.Load())
	}
}
