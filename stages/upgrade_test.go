package stages_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// replaceFile puts src at dst the way dpkg and install do: a new file
// renamed over the old name, so that running processes keep theirs.
func replaceFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// ferry is upgraded (the file the runner calls is replaced) between two
// stages of a running job, while an older engine has not been used for
// longer than enginebin.KeepUnused and a new job's prepare unpacks the new
// engine and sweeps. The running job's later stages run with the new ferry,
// read the state the old one wrote, and its kubectl still runs the engine
// the job started with; the job succeeds and cleanup removes its state.
func TestUpgradeBetweenStagesOfRunningJob(t *testing.T) {
	dir := t.TempDir()
	oldBin, err := ferrybuild.BuildVersion(filepath.Join(dir, "old"), "upgrade-old")
	if err != nil {
		t.Fatal(err)
	}
	newBin, err := ferrybuild.BuildVersion(filepath.Join(dir, "new"), "upgrade-new")
	if err != nil {
		t.Fatal(err)
	}
	runnerBin := filepath.Join(dir, "usr-bin", "ferry")
	if err := os.MkdirAll(filepath.Dir(runnerBin), 0o755); err != nil {
		t.Fatal(err)
	}
	replaceFile(t, oldBin, runnerBin)
	state := filepath.Join(dir, "state")
	d, err := runnerdriver.New(runnerdriver.Config{
		FerryBinary: runnerBin,
		BaseDir:     filepath.Join(dir, "runner"),
		// The job waits for a file the test makes in its own temp dir, which
		// a private /tmp would hide: this test is about upgrades.
		ExtraArgs: []string{"--state-dir=" + state, "--kube-sources=none", "--private-tmp=off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	proceed := filepath.Join(dir, "upgraded")
	upgradeNow := make(chan struct{})
	var once sync.Once
	done := make(chan *runnerdriver.JobResult, 1)
	go func() {
		done <- d.RunJob(ctx, runnerdriver.Job{
			Name: "in-flight",
			Script: []string{
				"kubectl version --client",
				// The marker is computed so that the echoed command
				// line does not contain it.
				"echo upgrade-$((6*7))",
				"for i in $(seq 1200); do [ -e " + proceed + " ] && break; sleep 0.1; done",
				"test -e " + proceed,
			},
			AfterScript: []string{"kubectl version --client"},
			OnLog: func(log []byte) bool {
				if bytes.Contains(log, []byte("upgrade-42")) {
					once.Do(func() { close(upgradeNow) })
				}
				return false
			},
		})
	}()
	select {
	case <-upgradeNow:
	case res := <-done:
		t.Fatalf("job ended before the upgrade: %s\n%s", res.Status, res.Log)
	case <-ctx.Done():
		t.Fatal("job never reached the upgrade point")
	}

	// The job's state as the old ferry wrote it.
	jobs, _ := filepath.Glob(filepath.Join(state, "jobs", "*"))
	if len(jobs) != 1 {
		t.Fatalf("job dirs %v, want 1", jobs)
	}
	var meta jobstate.Meta
	if b, err := os.ReadFile(filepath.Join(jobs[0], jobstate.MetaFile)); err != nil || json.Unmarshal(b, &meta) != nil || meta.Ferry != "upgrade-old" || meta.Format != jobstate.Format {
		t.Fatalf("meta.json of the running job: %+v %v", meta, err)
	}
	oldEngine, err := os.Readlink(filepath.Join(jobs[0], "bin", "kubectl"))
	if err != nil {
		t.Fatal(err)
	}
	// The upgrade, with the old engine unused for longer than the sweep
	// keeps unused engines.
	replaceFile(t, newBin, runnerBin)
	long := time.Now().Add(-enginebin.KeepUnused - 24*time.Hour)
	if err := os.Chtimes(oldEngine, long, long); err != nil {
		t.Fatal(err)
	}
	next := d.RunJob(ctx, runnerdriver.Job{Name: "after-upgrade", Script: []string{"kubectl version --client"}})
	if !next.Succeeded() || !strings.Contains(next.Log, "Client Version: ferry upgrade-new") {
		t.Fatalf("job after the upgrade: %s %s\n%s", next.Status, next.Error, next.Log)
	}
	engines, _ := filepath.Glob(filepath.Join(state, enginebin.DirName, "ferry-engine-*"))
	if _, err := os.Stat(oldEngine); err != nil {
		t.Fatalf("the new ferry's unpack swept the engine of the running job: %v (engines now %v)", err, engines)
	}
	if len(engines) != 2 {
		t.Errorf("engines %v, want the old and the new", engines)
	}
	if err := os.WriteFile(proceed, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	var res *runnerdriver.JobResult
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatal("the upgraded job did not finish")
	}
	if !res.Succeeded() {
		t.Fatalf("job upgraded mid-flight: %s %s\n%s\n%s", res.Status, res.Error, res.Log, res.SystemLog)
	}
	// Its kubectl ran the engine it started with, before and after.
	if n := strings.Count(res.Log, "Client Version: ferry upgrade-old"); n != 2 {
		t.Errorf("kubectl of the running job printed the old engine's version %d times, want 2 (before and after the upgrade):\n%s", n, res.Log)
	}
	if strings.Contains(res.Log, "upgrade-new") {
		t.Errorf("the running job's kubectl switched engines mid-job:\n%s", res.Log)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "jobs", "*")); len(left) != 0 {
		t.Errorf("the new ferry's cleanup left job state: %v", left)
	}
}

// A state dir of a newer format (ferry downgraded while the job ran) is
// refused by run with one line, as the host's failure.
func TestRunRefusesNewerStateFormat(t *testing.T) {
	j := newJob(t, "900")
	j.mustPrepare()
	st := j.state()
	b, err := os.ReadFile(st.Path(jobstate.MetaFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["format"], m["ferry"] = jobstate.Format+1, "99.0.0"
	b, _ = json.Marshal(m)
	if err := os.WriteFile(st.Path(jobstate.MetaFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := j.ferry("run", j.script("echo should-not-run"), "build_script")
	if r.code != 2 || strings.Contains(r.stdout, "should-not-run") {
		t.Fatalf("run over a newer state format: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout+r.stderr, "was written by ferry 99.0.0 in state format 2; this ferry test reads formats up to 1") {
		t.Errorf("no clear line:\n%s%s", r.stdout, r.stderr)
	}
}

// A job prepared by a ferry before state format versions (meta.json
// without format, ferry or token hash) keeps running after the upgrade: the
// new ferry's run reads its state (the job's overrides reach the script)
// and cleanup removes it.
func TestRunReadsPreVersionState(t *testing.T) {
	j := newJob(t, "901")
	j.mustPrepare()
	st := j.state()
	if err := st.AddEnv("FERRY_PRE_VERSION_OVERRIDE", "kept", false); err != nil {
		t.Fatal(err)
	}
	m, err := st.Meta()
	if err != nil {
		t.Fatal(err)
	}
	legacy, _ := json.Marshal(map[string]any{"created": m.Created, "job_id": m.JobID, "project_dir": m.ProjectDir, "timeout_seconds": m.TimeoutSeconds})
	if err := os.WriteFile(st.Path(jobstate.MetaFile), legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	r := j.ferry("run", j.script(`echo "override=$FERRY_PRE_VERSION_OVERRIDE"`), "build_script")
	if r.code != 0 || !strings.Contains(r.stdout, "override=kept") {
		t.Fatalf("run over pre-version state: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := j.ferry("cleanup"); r.code != 0 {
		t.Fatalf("cleanup: exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(st.Dir()); err == nil {
		t.Error("cleanup left the pre-version state dir")
	}
}

// A job prepared by a ferry that named job dirs after CI_SERVER_URL and
// CI_JOB_ID, whose later stages run after an upgrade that keys jobs on the
// payload (here: the admin also set --server-url, so the names differ):
// run finds the old dir (the job's overrides reach its script) and cleanup
// removes it. A legacy dir whose meta.json names another job is not taken.
func TestRunFindsJobDirOfOlderFerry(t *testing.T) {
	j := newJob(t, "902")
	j.mustPrepare()
	st := j.state()
	if err := st.AddEnv("FERRY_LEGACY_OVERRIDE", "found", false); err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(j.stateDir, "jobs", jobstate.Key(j.vars["CI_SERVER_URL"], "902"))
	if legacy != st.Dir() {
		t.Fatalf("the fake job's dir %s is not where a ferry before payload keys put it (%s)", st.Dir(), legacy)
	}
	m, _ := st.Meta()
	b, _ := json.Marshal(map[string]any{"created": m.Created, "job_id": "902", "timeout_seconds": 3600})
	if err := os.WriteFile(st.Path(jobstate.MetaFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	j.args = append(j.args, "--server-url=https://gitlab-internal.example.com:8443")
	r := j.ferry("run", j.script(`echo "override=$FERRY_LEGACY_OVERRIDE"`), "build_script")
	if r.code != 0 || !strings.Contains(r.stdout, "override=found") {
		t.Fatalf("run of a job prepared by an older ferry: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Another job's legacy meta.json in that dir: not this job's state.
	b, _ = json.Marshal(map[string]any{"created": m.Created, "job_id": "903"})
	if err := os.WriteFile(st.Path(jobstate.MetaFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := j.ferry("run", j.script("echo should-not-run"), "build_script"); r.code != 2 || strings.Contains(r.stdout, "should-not-run") {
		t.Errorf("run took a legacy dir of another job: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, _ = json.Marshal(map[string]any{"created": m.Created, "job_id": "902"})
	if err := os.WriteFile(st.Path(jobstate.MetaFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := j.ferry("cleanup"); r.code != 0 {
		t.Fatalf("cleanup: exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(legacy); err == nil {
		t.Error("cleanup left the older ferry's job dir")
	}
}
