package deployguard_test

import (
	"bytes"
	"context"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
	"gitlab.com/ferry-ci/ferry/pkg/deployguard"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestGuardCostsNoRequest: the rules read the lookup the apply does anyway:
// with them on, an apply makes the same requests (one metadata GET and one
// apply PATCH per object) as with them off, and a refused apply makes only
// the GETs.
func TestGuardCostsNoRequest(t *testing.T) {
	var mu sync.Mutex
	var reqs []string
	cfg := c.AdminRESTConfig()
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			reqs = append(reqs, r.Method)
			mu.Unlock()
			return rt.RoundTrip(r)
		})
	})
	take := func() string {
		mu.Lock()
		defer mu.Unlock()
		r := reqs
		reqs = nil
		sort.Strings(r)
		return strings.Join(r, " ")
	}
	a, err := apply.NewApplier(cfg, apply.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.ServiceAccountCredentials(ctx, "guard-requests", "x", "admin"); err != nil {
		t.Fatal(err)
	}
	objs := func(v string) []*apply.Object {
		o, err := apply.Parse("app.yml", []byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: one, namespace: guard-requests}
data: {v: "`+v+`"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: two, namespace: guard-requests}
data: {v: "`+v+`"}
`), nil)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	guard := func(pipeline string) apply.ApplyOptions {
		g, err := deployguard.FromEnv(func(k string) (string, bool) {
			v, ok := map[string]string{"CI_SERVER_URL": "https://gitlab.example.com", "CI_PROJECT_ID": "7", "CI_PIPELINE_ID": pipeline, "CI_JOB_ID": pipeline}[k]
			return v, ok
		})
		if err != nil {
			t.Fatal(err)
		}
		var errOut bytes.Buffer
		return apply.ApplyOptions{Annotations: g.ID.Records(), ErrOut: &errOut, Guard: func(target string, live map[string]string) (string, error) {
			d, err := g.Check(target, live)
			return d.Note, err
		}}
	}
	for _, tc := range []struct {
		name   string
		objs   []*apply.Object
		opts   apply.ApplyOptions
		failed int
		want   string
	}{
		{"create, rules off", objs("1"), apply.ApplyOptions{}, 0, "GET GET PATCH PATCH"},
		{"configure, rules off", objs("2"), apply.ApplyOptions{}, 0, "GET GET PATCH PATCH"},
		{"configure, rules on", objs("3"), guard("20"), 0, "GET GET PATCH PATCH"},
		{"older pipeline, refused", objs("4"), guard("10"), 2, "GET GET"},
	} {
		take()
		res, err := a.Apply(ctx, tc.objs, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Failed != tc.failed {
			t.Errorf("%s: %d failed, want %d", tc.name, res.Failed, tc.failed)
		}
		if got := take(); got != tc.want {
			t.Errorf("%s: requests %q, want %q", tc.name, got, tc.want)
		}
	}
}
