// Package bench compares ferry's apply with kubectl's on one real
// kube-apiserver (e2e/cluster), side by side in one run, as ratios:
//
//	cd e2e && go test ./bench -run '^$' -bench . -benchtime 3x
//
// (a) the seed case, a Deployment and a Service in a directory, each tool a
// fresh process: ferry, `kubectl apply`, `kubectl apply --server-side`;
// (b) 200 objects (Deployments, Services, ConfigMaps in 5 namespaces),
// first apply and re-apply; (c) the lower bound for (b): only the SSA PATCH
// requests, from a warm client, with ferry's concurrency.
//
// ferry is the binary a job's `kubectl` runs through its bin/kubectl link:
// the small kubectl (executor/kubectl) with the engine beside it ($FERRY_BIN,
// a kubectl, if set). Every tool keeps its
// discovery cache warm between runs, as on a runner host.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/pkg/apply"
	"gitlab.com/ferry-ci/ferry/pkg/kubediscovery"
)

var c *cluster.Cluster

func TestMain(m *testing.M) { cluster.Main(m, &c, cluster.Options{SimulateRollouts: true}) }

var (
	buildOnce sync.Once
	ferryBin  string
	ferryArgs []string // before "apply"
	buildErr  error
	home      string // shared HOME/state dir of the tools (warm caches)
)

func setup(b *testing.B) {
	b.Helper()
	buildOnce.Do(func() {
		home, buildErr = os.MkdirTemp("", "ferry-bench-")
		if buildErr != nil {
			return
		}
		if p := os.Getenv("FERRY_BIN"); p != "" {
			ferryBin = p
			return
		}
		ferryBin, buildErr = ferrybuild.BuildKubectl(home)
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
}

// tool runs one apply of dir as a fresh process.
type tool struct {
	name string
	cmd  func(dir string) *exec.Cmd
}

func tools() []tool {
	env := append(os.Environ(), "KUBECONFIG="+c.AdminKubeconfigPath, "HOME="+home, "FERRY_STATE_DIR="+filepath.Join(home, "state"))
	mk := func(bin string, args ...string) func(string) *exec.Cmd {
		return func(dir string) *exec.Cmd {
			cmd := exec.Command(bin, append(append([]string{}, args...), dir)...)
			cmd.Env = env
			return cmd
		}
	}
	return []tool{
		{"ferry", mk(ferryBin, append(append([]string{}, ferryArgs...), "apply", "-R", "-f")...)},
		{"kubectl", mk("kubectl", "apply", "-R", "-f")},
		{"kubectl-ss", mk("kubectl", "apply", "--server-side", "-R", "-f")},
	}
}

func runTool(b *testing.B, t tool, dir string) time.Duration {
	b.Helper()
	cmd := t.cmd(dir)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%s apply -f %s: %v\n%s", t.name, dir, err, out)
	}
	return d
}

var seq atomic.Int64

// writeSeed writes the seed case into a fresh namespace of its own.
func writeSeed(b *testing.B) string {
	b.Helper()
	ns := fmt.Sprintf("seed-%d-%d", os.Getpid(), seq.Add(1))
	dir := b.TempDir()
	src := "../../testdata/manifests/seed"
	files := map[string]string{"00-namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + ns + "\n"}
	for _, f := range []string{"deployment.yaml", "service.yaml"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			b.Fatal(err)
		}
		files[f] = strings.Replace(string(data), "metadata:\n", "metadata:\n  namespace: "+ns+"\n", 1)
	}
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(data), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// write200 writes 5 namespaces with 40 objects each (14 Deployments, 13
// Services, 13 ConfigMaps): 200 objects and the 5 Namespaces.
func write200(b testing.TB) (string, []string) {
	b.Helper()
	prefix := fmt.Sprintf("b%d-%d", os.Getpid(), seq.Add(1))
	dir := b.TempDir()
	var nss []string
	var nsDoc strings.Builder
	for i := range 5 {
		ns := fmt.Sprintf("%s-%d", prefix, i)
		nss = append(nss, ns)
		fmt.Fprintf(&nsDoc, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns)
		var sb strings.Builder
		for j := range 14 {
			fmt.Fprintf(&sb, deployTmpl, fmt.Sprintf("app-%d", j), ns)
		}
		for j := range 13 {
			fmt.Fprintf(&sb, svcTmpl, fmt.Sprintf("app-%d", j), ns)
			fmt.Fprintf(&sb, cmTmpl, fmt.Sprintf("cfg-%d", j), ns, j)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d-ns.yaml", i+1)), []byte(sb.String()), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "00-namespaces.yaml"), []byte(nsDoc.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return dir, nss
}

const deployTmpl = `---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  replicas: 2
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: app
        image: registry.example.com/%[1]s:1.0
        ports: [{containerPort: 8080}]
        env: [{name: MODE, value: production}]
`

const svcTmpl = `---
apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  selector: {app: %[1]s}
  ports: [{port: 80, targetPort: 8080}]
`

const cmTmpl = `---
apiVersion: v1
kind: ConfigMap
metadata:
  name: %[1]s
  namespace: %[2]s
data:
  index: "%[3]d"
  config.yaml: |
    listen: :8080
    log: info
`

// sideBySide times first apply and re-apply of fresh copies of the
// manifests by every tool, b.N times, and reports medians and ratios.
func sideBySide(b *testing.B, gen func(*testing.B) string) {
	setup(b)
	ts := tools()
	// warm every tool's discovery cache (a runner host's steady state)
	for _, t := range ts {
		runTool(b, t, gen(b))
	}
	first := map[string][]time.Duration{}
	again := map[string][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		for _, t := range ts {
			dir := gen(b)
			first[t.name] = append(first[t.name], runTool(b, t, dir))
			again[t.name] = append(again[t.name], runTool(b, t, dir))
		}
	}
	b.StopTimer()
	report(b, "first", first)
	report(b, "reapply", again)
}

func report(b *testing.B, what string, ds map[string][]time.Duration) {
	f := median(ds["ferry"])
	b.ReportMetric(ms(f), what+"-ferry-ms")
	for _, t := range []string{"kubectl", "kubectl-ss"} {
		d := median(ds[t])
		b.ReportMetric(ms(d), what+"-"+t+"-ms")
		b.ReportMetric(float64(d)/float64(f), what+"-"+t+"/ferry")
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkSeed is (a): one Deployment and one Service in a directory.
func BenchmarkSeed(b *testing.B) { sideBySide(b, writeSeed) }

// Benchmark200 is (b): 200 objects in 5 namespaces.
func Benchmark200(b *testing.B) {
	sideBySide(b, func(b *testing.B) string { d, _ := write200(b); return d })
}

// BenchmarkLowerBound200 is (c): a warm client sending only the 205 SSA
// PATCH requests (Namespaces first, then 8 at a time), against ferry's
// engine in the same process with a warm Applier doing the whole job
// (reading, mapping, staging, lookups, output words).
func BenchmarkLowerBound200(b *testing.B) {
	cfg := rest.CopyConfig(c.AdminRESTConfig())
	cfg.QPS, cfg.Burst = 500, 1000
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	a, err := apply.NewApplier(c.AdminRESTConfig(), apply.Options{Discovery: kubediscovery.Cached(filepath.Join(b.TempDir(), "discovery"))})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	engine := func(dir string) {
		objs, err := apply.ReadManifests(apply.ReadOptions{Filenames: []string{dir}})
		if err != nil {
			b.Fatal(err)
		}
		res, err := a.Apply(ctx, objs, apply.ApplyOptions{Namespace: "default"})
		if err != nil || res.Err() != nil {
			b.Fatalf("engine: %v %v", err, res.Err())
		}
	}
	engine(func() string { d, _ := write200(b); return d }()) // warm
	var minFirst, minAgain, engFirst, engAgain []time.Duration
	b.ResetTimer()
	for range b.N {
		dir, _ := write200(b)
		objs, err := apply.ReadManifests(apply.ReadOptions{Filenames: []string{dir}})
		if err != nil {
			b.Fatal(err)
		}
		bodies := prepared(b, objs)
		t0 := time.Now()
		minimal(b, ctx, dyn, bodies)
		minFirst = append(minFirst, time.Since(t0))
		t0 = time.Now()
		minimal(b, ctx, dyn, bodies)
		minAgain = append(minAgain, time.Since(t0))

		dir, _ = write200(b)
		t0 = time.Now()
		engine(dir)
		engFirst = append(engFirst, time.Since(t0))
		t0 = time.Now()
		engine(dir)
		engAgain = append(engAgain, time.Since(t0))
	}
	b.StopTimer()
	for _, r := range []struct {
		what       string
		eng, lower []time.Duration
	}{{"first", engFirst, minFirst}, {"reapply", engAgain, minAgain}} {
		e, l := median(r.eng), median(r.lower)
		b.ReportMetric(ms(l), r.what+"-ssa-only-ms")
		b.ReportMetric(ms(e), r.what+"-ferry-engine-ms")
		b.ReportMetric(float64(e)/float64(l), r.what+"-ferry/ssa-only")
	}
}

type body struct {
	gvr       schema.GroupVersionResource
	ns, name  string
	data      []byte
	namespace bool
}

// prepared is the lower bound's input: JSON bodies and resources known in
// advance (no discovery, no parsing in the timed part).
func prepared(b *testing.B, objs []*apply.Object) []body {
	gvrs := map[string]schema.GroupVersionResource{
		"Namespace":  {Version: "v1", Resource: "namespaces"},
		"Deployment": {Group: "apps", Version: "v1", Resource: "deployments"},
		"Service":    {Version: "v1", Resource: "services"},
		"ConfigMap":  {Version: "v1", Resource: "configmaps"},
	}
	var out []body
	for _, o := range objs {
		data, err := json.Marshal(o.Object)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, body{gvrs[o.GetKind()], o.GetNamespace(), o.GetName(), data, o.GetKind() == "Namespace"})
	}
	return out
}

func minimal(b *testing.B, ctx context.Context, dyn dynamic.Interface, bodies []body) {
	patch := func(x body) {
		_, err := dyn.Resource(x.gvr).Namespace(x.ns).Patch(ctx, x.name, types.ApplyPatchType, x.data, metav1.PatchOptions{FieldManager: "lower-bound"})
		if err != nil {
			b.Error(err)
		}
	}
	var rest []body
	for _, x := range bodies {
		if x.namespace {
			patch(x)
		} else {
			rest = append(rest, x)
		}
	}
	ch := make(chan body)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := range ch {
				patch(x)
			}
		}()
	}
	for _, x := range rest {
		ch <- x
	}
	close(ch)
	wg.Wait()
}

// BenchmarkDiscovery measures what the disk cache saves a new process:
// building the REST mapping for a Deployment with an empty cache (cold) and
// with the cache a previous job left (warm).
func BenchmarkDiscovery(b *testing.B) {
	cacheDir := filepath.Join(b.TempDir(), "discovery")
	mapping := func(dir string) time.Duration {
		t0 := time.Now()
		a, err := apply.NewApplier(c.AdminRESTConfig(), apply.Options{Discovery: kubediscovery.Cached(dir)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.Mapper().RESTMapping(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "v1"); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	mapping(cacheDir)
	var cold, warm []time.Duration
	b.ResetTimer()
	for range b.N {
		cold = append(cold, mapping(filepath.Join(b.TempDir(), "discovery")))
		warm = append(warm, mapping(cacheDir))
	}
	b.StopTimer()
	b.ReportMetric(ms(median(cold)), "cold-ms")
	b.ReportMetric(ms(median(warm)), "warm-ms")
	b.ReportMetric(float64(median(cold))/float64(median(warm)), "cold/warm")
}

// BenchmarkSeedFloor is the seed apply (the Service and Deployment of
// testdata/manifests/seed into an existing namespace) against its physical
// floor, each a fresh process, side by side: floor (bench/floor: load the
// kubeconfig, send the two SSA PATCHes, nothing else), ferry's `kubectl
// apply -f dir` and `kubectl apply --server-side -f dir` (the job's small
// kubectl), and the real kubectl's `apply -f dir` and `apply --server-side
// -f dir`. First apply (created) and re-apply (unchanged), medians; the
// target is ferry/floor <= 1.5x.
func BenchmarkSeedFloor(b *testing.B) {
	setup(b)
	floorBin := filepath.Join(home, "floor")
	if out, err := exec.Command("go", "build", "-o", floorBin, "./floor").CombinedOutput(); err != nil {
		b.Fatalf("building the floor: %v\n%s", err, out)
	}
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(c.AdminRESTConfig())
	if err != nil {
		b.Fatal(err)
	}
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	env := append(os.Environ(), "KUBECONFIG="+c.AdminKubeconfigPath, "HOME="+home, "FERRY_STATE_DIR="+filepath.Join(home, "state"))
	// prepare writes the seed into a fresh namespace: its directory, and
	// the floor's arguments.
	prepare := func() (string, []string) {
		ns := fmt.Sprintf("floor-%d-%d", os.Getpid(), seq.Add(1))
		nsObj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}
		data, _ := json.Marshal(nsObj)
		if _, err := dyn.Resource(nsGVR).Patch(ctx, ns, types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "bench"}); err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		var args []string
		for _, f := range []string{"service.yaml", "deployment.yaml"} {
			raw, err := os.ReadFile(filepath.Join("../../testdata/manifests/seed", f))
			if err != nil {
				b.Fatal(err)
			}
			doc := strings.Replace(string(raw), "metadata:\n", "metadata:\n  namespace: "+ns+"\n", 1)
			if err := os.WriteFile(filepath.Join(dir, f), []byte(doc), 0o600); err != nil {
				b.Fatal(err)
			}
			objs, err := apply.Parse(f, []byte(doc), nil)
			if err != nil {
				b.Fatal(err)
			}
			body, _ := json.Marshal(objs[0].Object)
			jf := filepath.Join(b.TempDir(), f+".json")
			if err := os.WriteFile(jf, body, 0o600); err != nil {
				b.Fatal(err)
			}
			path := "/api/v1/namespaces/" + ns + "/services/" + objs[0].GetName()
			if objs[0].GetKind() == "Deployment" {
				path = "/apis/apps/v1/namespaces/" + ns + "/deployments/" + objs[0].GetName()
			}
			args = append(args, path+"="+jf)
		}
		return dir, args
	}
	timed := func(bin string, args ...string) time.Duration {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			b.Fatalf("%s %v: %v\n%s", bin, args, err, out)
		}
		return d
	}
	ferry := func(extra ...string) func(string, []string) time.Duration {
		return func(dir string, _ []string) time.Duration {
			args := append(append(append([]string{}, ferryArgs...), "apply"), extra...)
			return timed(ferryBin, append(args, "-f", dir)...)
		}
	}
	runs := []struct {
		name string
		run  func(dir string, floorArgs []string) time.Duration
	}{
		{"floor", func(_ string, a []string) time.Duration { return timed(floorBin, a...) }},
		{"ferry", ferry()},
		{"ferry-ss", ferry("--server-side")},
		// The real kubectl, client-side and server-side: what ferry replaces.
		{"kubectl", func(dir string, _ []string) time.Duration { return timed("kubectl", "apply", "-f", dir) }},
		{"kubectl-ss", func(dir string, _ []string) time.Duration {
			return timed("kubectl", "apply", "--server-side", "-f", dir)
		}},
	}
	for _, r := range runs { // warm caches (discovery, page cache)
		dir, a := prepare()
		r.run(dir, a)
	}
	first := map[string][]time.Duration{}
	again := map[string][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		for _, r := range runs {
			dir, a := prepare()
			first[r.name] = append(first[r.name], r.run(dir, a))
			again[r.name] = append(again[r.name], r.run(dir, a))
		}
	}
	b.StopTimer()
	for what, ds := range map[string]map[string][]time.Duration{"first": first, "reapply": again} {
		fl := median(ds["floor"])
		b.ReportMetric(ms(fl), what+"-floor-ms")
		for _, n := range []string{"ferry", "ferry-ss", "kubectl", "kubectl-ss"} {
			d := median(ds[n])
			b.ReportMetric(ms(d), what+"-"+n+"-ms")
			b.ReportMetric(float64(d)/float64(fl), what+"-"+n+"/floor")
		}
	}
}
