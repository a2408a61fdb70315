package stages_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// BenchmarkRunStage measures one `ferry run` of a trivial stage script: the
// per-stage cost a job pays for ferry (process start, state read, redactor,
// GITLAB_ENV check, process-group bookkeeping) on top of bash.
func BenchmarkRunStage(b *testing.B) { benchRunStage(b, "900") }

func benchRunStage(b *testing.B, id string, args ...string) {
	j := newJob(b, id)
	j.args = append(j.args, args...)
	prep := j.cmd("prepare")
	if out, err := prep.CombinedOutput(); err != nil {
		b.Fatalf("prepare: %v %s", err, out)
	}
	script := benchScript(b, j)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := j.cmd("run", script, "build_script")
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("run: %v %s", err, out)
		}
	}
	b.StopTimer()
	j.cmd("cleanup").Run()
}

// BenchmarkBashDirect runs the same script with bash alone: the floor.
func BenchmarkBashDirect(b *testing.B) {
	j := newJob(b, "901")
	script := benchScript(b, j)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := exec.Command("bash", script)
		c.Env = j.environ()
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("bash: %v %s", err, out)
		}
	}
}

func benchScript(b *testing.B, j *fakeJob) string {
	b.Helper()
	return j.script("echo \"$CI_JOB_ID hello\"\ntrue")
}

// BenchmarkFerryStart is `ferry version`: the cost of starting the binary
// at all (loading it and running every package's init), which every stage
// pays before ferry does any work.
func BenchmarkFerryStart(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(ferryBin, "version").CombinedOutput(); err != nil {
			b.Fatalf("version: %v %s", err, out)
		}
	}
}

// BenchmarkStageFloor runs the same script through testdata/stagefloor, a Go
// program that only starts bash in a process group and waits: the floor for
// any executor that is a separate program, which the runner's protocol
// requires (run_exec is a process per stage).
func BenchmarkStageFloor(b *testing.B) {
	j := newJob(b, "902")
	script := benchScript(b, j)
	floor := filepath.Join(b.TempDir(), "stagefloor")
	build := exec.Command("go", "build", "-o", floor, "./stages/testdata/stagefloor")
	build.Dir = ferrybuild.RepoRoot()
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build stagefloor: %v %s", err, out)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := exec.Command(floor, script)
		c.Env = j.environ()
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("stagefloor: %v %s", err, out)
		}
	}
}

// BenchmarkProcessStart is /bin/true: what starting any program costs on
// this host, the part of every stage no executor can avoid.
func BenchmarkProcessStart(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepare is a whole prepare with the default features: ferry hands
// it to the (already unpacked) engine, which links the kubectl shim. Once
// per job, against BenchmarkRunStage's every stage.
func BenchmarkPrepare(b *testing.B) {
	j := newJob(b, "903")
	withShim(j)
	j.mustPrepare() // unpacks the engine
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
			b.Fatalf("prepare: %v %s", err, out)
		}
	}
}

// BenchmarkSandboxCost is what the Landlock sandbox adds to one stage,
// measured so that a busy machine does not decide it: each iteration runs
// the same stage once with the sandbox and once without, alternating which
// goes first, and the reported numbers are medians of the per-pair
// differences, in wall time and in CPU time (user+system of ferry and the
// bash it waited for, from wait4). Running all of one kind and then all of
// the other lets load
// that changes between the two halves pass for the sandbox's cost.
//
// The runner's temp root holds the job's own custom-executor* dir and 20 or
// 2,000 of other jobs (a busy shared runner): the sandbox's cost must not
// grow with them. private-tmp=off is the sandbox without the mount
// namespace (kernels that refuse unprivileged user namespaces).
//
// The layout is a real runner's, not go test's: the runner user's HOME and
// ferry's state, builds and cache dirs live outside /tmp (benchBase: /var/lib
// as root, like gitlab-runner's, else the user's cache dir), so /tmp's own
// entries are not walked as they would not be on a runner. The runner's
// temp root is /tmp itself there (gitlab-runner's MkdirTemp("",
// "custom-executor")), which ferry hides whole; the benchmark cannot fill
// the host's /tmp with 2,000 dirs, so it keeps them in a dir of its own
// under /tmp and hides /tmp as ferry hides a runner's (--sandbox-hide=/tmp).
// The payload is a real one's size (~40 KB, job_info.project_id set), since
// the sandbox reads the project id on every stage.
func BenchmarkSandboxCost(b *testing.B) {
	for _, n := range []int{20, 2000} {
		for _, mode := range []string{"auto", "off"} {
			b.Run(fmt.Sprintf("siblings=%d/private-tmp=%s", n, mode), func(b *testing.B) { sandboxCost(b, n, mode) })
		}
	}
}

func sandboxCost(b *testing.B, siblings int, privateTmp string) {
	on, off := newJobAt(b, "904", benchBase(b)), newJobAt(b, "905", benchBase(b))
	on.args = append(on.args, "--private-tmp="+privateTmp, "--sandbox-hide=/tmp")
	off.args = append(off.args, "--sandbox=false")
	scripts := map[*fakeJob]string{}
	for _, j := range []*fakeJob{on, off} {
		// The runner's layout: TMPDIR and the payload in the job's own
		// custom-executor* dir, beside those of other jobs.
		root := filepath.Join(b.TempDir(), "runner-tmp")
		own := filepath.Join(root, "custom-executor"+j.id)
		if err := os.MkdirAll(own, 0o700); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < siblings; i++ {
			d := filepath.Join(root, fmt.Sprintf("custom-executor%d", 100000+i))
			if err := os.Mkdir(d, 0o700); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, "script."), []byte("echo other job\n"), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		j.payload = filepath.Join(own, "response.json")
		writeRealisticPayload(b, j)
		j.extra = append(j.extra, "TMPDIR="+own)
		if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
			b.Fatalf("prepare: %v %s", err, out)
		}
		// Where the runner writes its stage scripts: the job's own dir.
		scripts[j] = filepath.Join(own, "script.build_script")
		if err := os.WriteFile(scripts[j], []byte("#!/usr/bin/env bash\necho \"$CI_JOB_ID hello\"\ntrue\n"), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	stage := func(j *fakeJob) (wall, cpu time.Duration) {
		c := j.cmd("run", scripts[j], "build_script")
		start := time.Now()
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("run: %v %s", err, out)
		}
		return time.Since(start), c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	var dWall, dCPU, onCPU []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wOn, cOn, wOff, cOff time.Duration
		if i%2 == 0 {
			wOn, cOn = stage(on)
			wOff, cOff = stage(off)
		} else {
			wOff, cOff = stage(off)
			wOn, cOn = stage(on)
		}
		dWall = append(dWall, float64(wOn-wOff)/1e6)
		dCPU = append(dCPU, float64(cOn-cOff)/1e6)
		onCPU = append(onCPU, float64(cOn)/1e6)
	}
	b.StopTimer()
	b.ReportMetric(median(dWall), "sandbox-wall-ms/stage")
	b.ReportMetric(median(dCPU), "sandbox-cpu-ms/stage")
	b.ReportMetric(median(onCPU), "stage-cpu-ms")
	for _, j := range []*fakeJob{on, off} {
		j.cmd("cleanup").Run()
	}
}

// benchBase is a directory outside /tmp for a benchmark job's HOME, state,
// builds and cache dirs (see sandboxCost).
func benchBase(b *testing.B) string {
	b.Helper()
	d, err := dirOutsideTmp(b, "/var/lib", "ferry-bench-") // like gitlab-runner's
	if err != nil {
		b.Skipf("no directory outside /tmp for the runner's layout: %v", err)
	}
	return d
}

// dirOutsideTmp makes a directory removed after the test, outside /tmp
// (which the private /tmp hides whole, and where every test of the machine
// makes its files): under root's parent as root, else in the user's cache
// dir.
func dirOutsideTmp(tb testing.TB, parent, prefix string) (string, error) {
	if os.Geteuid() != 0 {
		if d, err := os.UserCacheDir(); err == nil {
			parent = d
		}
	}
	d, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", err
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d, nil
}

// writeRealisticPayload writes j's payload in the runner's field order
// with a project id and 400 variables: ~40 KB, as real payloads are.
func writeRealisticPayload(b *testing.B, j *fakeJob) {
	b.Helper()
	id, _ := atoi(j.id)
	vars := make([]jobenv.Variable, 400)
	for i := range vars {
		vars[i] = jobenv.Variable{Key: fmt.Sprintf("VAR_%d", i), Value: fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", 40)), Public: true}
	}
	jr := struct {
		ID         int64             `json:"id"`
		Token      string            `json:"token"`
		JobInfo    map[string]any    `json:"job_info"`
		GitInfo    map[string]any    `json:"git_info"`
		RunnerInfo map[string]any    `json:"runner_info"`
		Variables  []jobenv.Variable `json:"variables"`
	}{int64(id), j.token, map[string]any{"name": "build", "stage": "build", "project_id": 77, "project_name": "proj"},
		map[string]any{"repo_url": "https://gitlab.example.com/group/proj.git", "ref": "main"}, map[string]any{"timeout": 3600}, vars}
	data, err := json.Marshal(jr)
	if err == nil {
		err = os.WriteFile(j.payload, data, 0o600)
	}
	if err != nil {
		b.Fatal(err)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkPreparePackaged is BenchmarkPrepare with ferry installed as the
// .deb installs it: <prefix>/bin/ferry with the engine and small kubectl
// root-owned in <prefix>/lib/ferry (the same bytes, taken from an unpacked
// copy). Nothing is unpacked or compared; side by side with
// BenchmarkPrepare, which compares ~80 MB with the unpacked copy each time.
func BenchmarkPreparePackaged(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: the installed engine must be root-owned")
	}
	src := newJob(b, "906")
	withShim(src)
	src.mustPrepare() // unpacks the pair, named by their sum
	prefix := b.TempDir()
	lib := filepath.Join(prefix, "lib", "ferry")
	self := filepath.Join(prefix, "bin", "ferry")
	unpacked, _ := filepath.Glob(filepath.Join(src.stateDir, enginebin.DirName, "ferry-*"))
	if len(unpacked) != 2 {
		b.Fatalf("unpacked %q, want the engine and the kubectl", unpacked)
	}
	for _, c := range append([][2]string{{ferryBin, self}}, [2]string{unpacked[0], filepath.Join(lib, filepath.Base(unpacked[0]))}, [2]string{unpacked[1], filepath.Join(lib, filepath.Base(unpacked[1]))}) {
		data, err := os.ReadFile(c[0])
		if err == nil {
			err = os.MkdirAll(filepath.Dir(c[1]), 0o755)
		}
		if err == nil {
			err = os.WriteFile(c[1], data, 0o755)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, d := range []string{prefix, filepath.Dir(lib)} {
		os.Chmod(d, 0o755)
	}
	j := newJob(b, "907")
	withShim(j)
	prepare := func() {
		c := j.cmd("prepare")
		c.Path, c.Args[0] = self, self
		if out, err := c.CombinedOutput(); err != nil || strings.Contains(string(out), "not using the installed engine") {
			b.Fatalf("prepare: %v %s", err, out)
		}
	}
	prepare()
	if _, err := os.Stat(filepath.Join(j.stateDir, enginebin.DirName)); !os.IsNotExist(err) {
		b.Fatalf("the packaged ferry unpacked its engine (%v)", err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		prepare()
	}
}

// BenchmarkPrepareMasked5MB is a prepare (core features, as
// BenchmarkPrepare's floor is the same prepare without the value) whose
// job has a 5 MB masked variable: the red team's case, which took 44 s
// when every automaton state had a dense row. Goal: under 2 s.
func BenchmarkPrepareMasked5MB(b *testing.B) {
	j := newJob(b, "908")
	raw := make([]byte, 5<<20*3/4)
	rand.New(rand.NewSource(1)).Read(raw)
	j.writePayload(3600, []jobenv.Variable{{Key: "BIG", Value: base64.StdEncoding.EncodeToString(raw), Masked: true}})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
			b.Fatalf("prepare: %v %s", err, out)
		}
	}
}

// BenchmarkPrepareCore is BenchmarkPrepareMasked5MB's floor: the same
// prepare without the masked value.
func BenchmarkPrepareCore(b *testing.B) {
	j := newJob(b, "909")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
			b.Fatalf("prepare: %v %s", err, out)
		}
	}
}

// BenchmarkHomeCost is what the job's home adds to prepare (docs/home.md):
// each iteration runs prepare once with --job-home=<mode> and once with
// --job-home=runner (HOME left as it is, nothing seeded), alternating which
// goes first; reported: the median of the per-pair wall-time differences.
// The runner user's home holds the four default seed files. project: the
// home exists after the first prepare (the steady state of a project);
// job: a fresh home is made and seeded each time.
func BenchmarkHomeCost(b *testing.B) {
	for _, mode := range []string{"project", "job"} {
		b.Run("mode="+mode, func(b *testing.B) {
			j := newJob(b, "")
			runnerHome := filepath.Join(j.base, "runner-home")
			for f, c := range map[string]string{".gitconfig": "[safe]\n\tdirectory = *\n", ".config/git/config": "[core]\n", ".ssh/config": "Host x\n  HostName 127.0.0.1\n", ".ssh/known_hosts": strings.Repeat("h ssh-ed25519 AAAA\n", 50)} {
				os.MkdirAll(filepath.Dir(filepath.Join(runnerHome, f)), 0o700)
				os.WriteFile(filepath.Join(runnerHome, f), []byte(c), 0o600)
			}
			j.extra = append(j.extra, "HOME="+runnerHome)
			id, _ := atoi(j.id)
			payload, _ := json.Marshal(map[string]any{"id": id, "token": j.token, "job_info": map[string]any{"project_id": 77}, "runner_info": map[string]any{"timeout": 3600}})
			if err := os.WriteFile(j.payload, payload, 0o600); err != nil {
				b.Fatal(err)
			}
			prep := func(m string) time.Duration {
				if m == "job" {
					// A fresh job: its home does not exist yet.
					jobstate.RemoveTree(j.state().Path("home"))
				}
				c := j.cmd("prepare", "--job-home="+m)
				start := time.Now()
				if out, err := c.CombinedOutput(); err != nil {
					b.Fatalf("prepare --job-home=%s: %v %s", m, err, out)
				}
				return time.Since(start)
			}
			prep(mode)
			var d []float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var with, without time.Duration
				if i%2 == 0 {
					with, without = prep(mode), prep("runner")
				} else {
					without, with = prep("runner"), prep(mode)
				}
				d = append(d, float64(with-without)/1e6)
			}
			b.ReportMetric(median(d), "home-ms/prepare")
		})
	}
}
