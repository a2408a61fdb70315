// Package differential runs the same kubectl command sequences twice
// against the real API server (e2e/cluster): once all with the real kubectl
// (the reference kubectl, built from the k8s.io/kubectl release ferry links:
// ferrybuild.ReferenceKubectl), once with ferry's kubectl for the steps a
// job runs (the rest, such as a colleague's `kubectl scale` from a laptop,
// stay with the real kubectl). Each run gets fresh namespaces. Every exit
// code is compared, and then the resulting objects, normalized by
// normalize (see there for what is left out and why).
//
// Adding a case is a few lines in the table of cases_test.go.
package differential

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/proctest"
)

var (
	c        *cluster.Cluster
	binDir   string // kubectl -> ferry's engine
	stateDir string // ferry's host state (warm discovery cache, as on a runner)
	realBin  string
)

func TestMain(m *testing.M) {
	dir, err := ferrybuild.SharedDir()
	if err != nil {
		panic(err)
	}
	if binDir, err = ferrybuild.KubectlBinDir(dir); err != nil {
		panic(err)
	}
	stateDir = filepath.Join(dir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		panic(err)
	}
	if realBin, err = ferrybuild.ReferenceKubectl(); err != nil {
		panic(err)
	}
	cluster.Main(m, &c, cluster.Options{})
}

// step is one kubectl command of a case. In args, files and stdin,
// {ns} is the run's namespace, {ns2} a second one, {dir} the directory
// holding the case's files and {url} a loopback HTTP server serving them.
type step struct {
	args  []string
	stdin string
	// job marks a step the deploy job runs: ferry's kubectl in the ferry
	// run. Other steps are done by the real kubectl in both runs.
	job bool
	// env is extra environment (e.g. KUBE_EDITOR for kubectl edit).
	env []string
	// output: the step prints one object (-o json), compared between the
	// runs like the objects (a dry run's result).
	output bool
	// says: words both tools' output of the step must hold (checked on
	// the real kubectl too, so the test cannot pass on a wrong guess of
	// its wording); and the reason of every "Error from server (Reason)"
	// must be the same in both, unless anyReason.
	says      []string
	anyReason bool
}

// job is a step a job runs; real is one the real kubectl runs in both runs.
func job(args ...string) step  { return step{args: args, job: true} }
func real(args ...string) step { return step{args: args} }

func (s step) withStdin(in string) step   { s.stdin = in; return s }
func (s step) withEnv(env ...string) step { s.env = env; return s }
func (s step) printed() step              { s.output = true; return s }
func (s step) saying(w ...string) step    { s.says = w; return s }
func (s step) mentioning(w ...string) step {
	s.says, s.anyReason = w, true
	return s
}

// diffCase is one row of the table.
type diffCase struct {
	name  string
	files map[string]string
	steps []step
	// objects are read after the last step from the run's namespace
	// ({ns} allowed): "deployment/app", "configmap/x -n {ns2}", ...
	objects []string
	// better lists the steps (by index) where ferry deliberately differs:
	// their exit codes are not compared, and the objects are not either.
	// Each use is documented in docs/apply.md.
	better map[int]string
	// lastAppliedDiffers: the objects are compared without the
	// last-applied-configuration annotation (documented in docs/apply.md).
	lastAppliedDiffers string
}

var seq atomic.Int64

// runCase runs c's steps with realFor(step) choosing the binary; it
// returns the exit codes and the normalized objects.
func runCase(t *testing.T, dc diffCase, tool string) ([]int, []string, []string) {
	t.Helper()
	n := seq.Add(1)
	ns := fmt.Sprintf("d%d-%s", n, tool)
	ns2 := ns + "-b"
	dir := t.TempDir()
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	sub := func(s string) string {
		return strings.NewReplacer("{ns2}", ns2, "{ns}", ns, "{dir}", dir, "{url}", srv.URL).Replace(s)
	}
	for name, data := range dc.files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(sub(data)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range []string{ns, ns2} {
		if out, code := kubectl(t, realBin, nil, "", "create", "namespace", x); code != 0 {
			t.Fatalf("create namespace %s: %s", x, out)
		}
	}
	var codes []int
	var outs, objs []string
	for _, s := range dc.steps {
		bin := realBin
		if s.job && tool == "ferry" {
			bin = filepath.Join(binDir, "kubectl")
		}
		args := make([]string, len(s.args))
		for i, a := range s.args {
			args[i] = sub(a)
		}
		var env []string
		for _, e := range s.env {
			env = append(env, sub(e))
		}
		out, code := kubectl(t, bin, env, sub(s.stdin), args...)
		codes = append(codes, code)
		if s.output && code != 0 {
			objs = append(objs, fmt.Sprintf("exit %d", code))
		} else if s.output {
			// The object printed, after any warning lines.
			printed := out
			if i := strings.Index(out, "\n{"); i >= 0 && !strings.HasPrefix(out, "{") {
				printed = out[i+1:]
			}
			objs = append(objs, normalize(t, printed, map[string]string{ns2: "NS2", ns: "NS"}))
		}
		outs = append(outs, fmt.Sprintf("$ kubectl %s  [%s, exit %d]\n%s", strings.Join(args, " "), map[bool]string{true: "ferry", false: "real kubectl"}[bin != realBin], code, out))
	}
	for _, ref := range dc.objects {
		args := append(strings.Fields(sub(ref)), "-o", "json")
		if !strings.Contains(sub(ref), " -n ") {
			args = append(args, "-n", ns)
		}
		out, code := kubectl(t, realBin, nil, "", append([]string{"get"}, args...)...)
		if code != 0 {
			objs = append(objs, fmt.Sprintf("%s: exit %d %s", ref, code, firstLine(out)))
			continue
		}
		objs = append(objs, normalize(t, out, map[string]string{ns2: "NS2", ns: "NS"}))
	}
	return codes, objs, outs
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.ReplaceAll(s, "\"", "")
}

// kubectl runs bin with the admin kubeconfig. Both tools get a fresh HOME;
// ferry gets the shared state directory (its discovery cache).
func kubectl(t *testing.T, bin string, env []string, stdin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", c.AdminKubeconfigPath}, args...)...)
	// KUBECTL_APPLYSET: kubectl 1.32 still gates --applyset behind it.
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "FERRY_STATE_DIR=" + stateDir, "KUBECTL_APPLYSET=true"}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), proctest.ExitCode(t, err)
}

// normalize makes a `kubectl get -o json` comparable between the runs:
//   - the run's namespaces become NS and NS2 (everywhere, also in names);
//   - metadata.uid, resourceVersion, creationTimestamp, generation,
//     managedFields and status are dropped: they record when and how often
//     an object was written, not what it is (ownership is compared by the
//     takeover tests, which read managedFields directly);
//   - the objects a List holds are sorted by kind and name;
//   - a Service's clusterIP(s) are allocated per object;
//   - the last-applied-configuration annotation is compared as JSON;
//   - an ApplySet's id (it hashes the namespace) is replaced;
//   - an ApplySet parent's tooling annotation keeps the tool's name
//     ("kubectl", which ferry writes too) but not its version.
//
// withoutLastApplied matches the annotation's line in a normalized object.
var withoutLastApplied = regexp.MustCompile(`(?m)^\s*"kubectl\.kubernetes\.io/last-applied-configuration": .*$`)

var applysetID = regexp.MustCompile(`applyset-[A-Za-z0-9_-]+-v1`)

func normalize(t *testing.T, data string, names map[string]string) string {
	t.Helper()
	// Longest first: the second namespace's name extends the first's
	// (ns-b), and a map's order is random.
	froms := slices.Collect(maps.Keys(names))
	slices.SortFunc(froms, func(a, b string) int { return len(b) - len(a) })
	for _, from := range froms {
		data = strings.ReplaceAll(data, from, names[from])
	}
	// An ApplySet's id hashes its parent's namespace, which differs per run.
	data = applysetID.ReplaceAllString(data, "applyset-ID-v1")
	var v map[string]any
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		t.Fatalf("decoding %q: %v", data, err)
	}
	norm := func(o map[string]any) {
		delete(o, "status")
		if m, ok := o["metadata"].(map[string]any); ok {
			for _, k := range []string{"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"} {
				delete(m, k)
			}
			if ann, ok := m["annotations"].(map[string]any); ok {
				if tool, ok := ann["applyset.kubernetes.io/tooling"].(string); ok {
					name, _, _ := strings.Cut(tool, "/")
					ann["applyset.kubernetes.io/tooling"] = name + "/VERSION"
				}
				if la, ok := ann["kubectl.kubernetes.io/last-applied-configuration"].(string); ok {
					var x any
					if json.Unmarshal([]byte(la), &x) == nil {
						b, _ := json.Marshal(x)
						ann["kubectl.kubernetes.io/last-applied-configuration"] = string(b)
					}
				}
			}
		}
		if spec, ok := o["spec"].(map[string]any); ok && o["kind"] == "Service" {
			delete(spec, "clusterIP")
			delete(spec, "clusterIPs")
		}
	}
	if items, ok := v["items"].([]any); ok {
		for _, it := range items {
			norm(it.(map[string]any))
		}
		sort.Slice(items, func(i, j int) bool { return fmt.Sprint(items[i]) < fmt.Sprint(items[j]) })
	} else {
		norm(v)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// check runs a case with both tools and compares.
func check(t *testing.T, dc diffCase) {
	realCodes, realObjs, realOut := runCase(t, dc, "kubectl")
	ferryCodes, ferryObjs, ferryOut := runCase(t, dc, "ferry")
	transcript := "real kubectl:\n" + strings.Join(realOut, "") + "\nferry:\n" + strings.Join(ferryOut, "")
	for i := range dc.steps {
		if _, ok := dc.better[i]; ok {
			continue
		}
		if realCodes[i] != ferryCodes[i] {
			t.Errorf("step %d %v: exit %d with ferry, %d with kubectl\n%s", i, dc.steps[i].args, ferryCodes[i], realCodes[i], transcript)
		}
	}
	for i, s := range dc.steps {
		if len(s.says) == 0 {
			continue
		}
		for _, w := range s.says {
			for tool, out := range map[string]string{"kubectl": realOut[i], "ferry": ferryOut[i]} {
				if !strings.Contains(out, w) {
					t.Errorf("step %d %v: %s's output lacks %q\n%s", i, s.args, tool, w, transcript)
				}
			}
		}
		if r, f := serverReasons(realOut[i]), serverReasons(ferryOut[i]); !s.anyReason && !slices.Equal(r, f) {
			t.Errorf("step %d %v: server error reasons %q with ferry, %q with kubectl\n%s", i, s.args, f, r, transcript)
		}
	}
	if len(dc.better) > 0 {
		t.Logf("ferry differs on purpose: %v\n%s", dc.better, transcript)
		return
	}
	for i := range realObjs {
		if dc.lastAppliedDiffers != "" {
			realObjs[i], ferryObjs[i] = withoutLastApplied.ReplaceAllString(realObjs[i], ""), withoutLastApplied.ReplaceAllString(ferryObjs[i], "")
		}
		if realObjs[i] != ferryObjs[i] {
			t.Errorf("%s differs:\nferry:\n%s\nkubectl:\n%s\n%s", objectName(dc, i), ferryObjs[i], realObjs[i], transcript)
		}
	}
	if testing.Verbose() {
		t.Log(transcript)
	}
}

// serverReason finds kubectl's form of an API error, "Error from server
// (Reason): " ("Error from server: " when the status has no reason).
var serverReason = regexp.MustCompile(`Error from server( \([A-Za-z]+\))?: `)

func serverReasons(out string) []string {
	var r []string
	for _, m := range serverReason.FindAllStringSubmatch(out, -1) {
		r = append(r, m[0])
	}
	return r
}

// objectName names the i-th compared object: the printed outputs of the
// steps marked printed, in order, then dc.objects.
func objectName(dc diffCase, i int) string {
	for j, s := range dc.steps {
		if !s.output {
			continue
		}
		if i == 0 {
			return fmt.Sprintf("the output of step %d", j)
		}
		i--
	}
	return dc.objects[i]
}
