// Package apply_test runs ferry's apply engine against a real
// kube-apiserver and etcd (e2e/cluster): one cluster for the package.
package apply_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/pkg/apply"
	"gitlab.com/ferry-ci/ferry/pkg/kubediscovery"
	"k8s.io/client-go/rest"
)

var c *cluster.Cluster

func TestMain(m *testing.M) { cluster.Main(m, &c, cluster.Options{SimulateRollouts: true}) }

var nsCounter atomic.Int64

// newNamespace creates a fresh namespace for one test (by applying it).
func newNamespace(t *testing.T, a *apply.Applier) string {
	t.Helper()
	ns := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e6, nsCounter.Add(1))
	objs := parse(t, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+ns+"\n")
	res, err := a.Apply(context.Background(), objs, apply.ApplyOptions{})
	if err != nil || res.Err() != nil {
		t.Fatalf("creating namespace %s: %v %v", ns, err, res.Err())
	}
	return ns
}

func adminConfig(t *testing.T) *rest.Config {
	t.Helper()
	cfg := c.AdminRESTConfig()
	return cfg
}

func newApplier(t *testing.T, cfg *rest.Config, cacheDir string) *apply.Applier {
	t.Helper()
	a, err := apply.NewApplier(cfg, apply.Options{Discovery: kubediscovery.Cached(cacheDir)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func parse(t *testing.T, name, data string) []*apply.Object {
	t.Helper()
	objs, err := apply.Parse(name, []byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// run applies objs and returns stdout and stderr.
func run(t *testing.T, a *apply.Applier, objs []*apply.Object, o apply.ApplyOptions) (*apply.Result, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	o.Out, o.ErrOut = &out, &errOut
	res, err := a.Apply(context.Background(), objs, o)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res, out.String(), errOut.String()
}

func wantLines(t *testing.T, what, got string, want ...string) {
	t.Helper()
	if g := strings.TrimRight(got, "\n"); g != strings.Join(want, "\n") {
		t.Fatalf("%s:\n%s\nwant:\n%s", what, g, strings.Join(want, "\n"))
	}
}
