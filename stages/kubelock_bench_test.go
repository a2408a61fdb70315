package stages_test

import (
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/benchstat"
	"gitlab.com/ferry-ci/ferry/pkg/deploylock/lockclient"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
)

// BenchmarkLockPrepareCost is what the deploy lock adds to a whole `ferry
// prepare` of a job with Kubernetes credentials (docs/deploy-safety.md):
// each iteration runs prepare once with --deploy-lock=true (the holder is
// started) and once with --deploy-lock=false, alternating which goes
// first, and reports the median of the per-pair wall-time differences with
// its 95% confidence interval (-lo, -hi): a prepare here is ~200 ms of
// process starts, and moves by more than the lock costs.
// Each prepare is followed by an untimed 200 ms pause (the runner's own
// stages) and cleanup (which stops the holder, waited for).
// The job is lockJob's: the take itself is e2e BenchmarkLockFree's.
// lockJob is a fake job with a kubeconfig of ferry's (prepare runs in the
// engine and starts the deploy lock holder when the lock is on) whose
// preflight talks to a local TLS server that answers /version (and 404 to
// the SelfSubjectReview, as a pre-1.28 server). The holder never talks to
// it: it asks the API server only when the job's kubectl asks for the lock.
func lockJob(b testing.TB) *fakeJob {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/version" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"major":"1","minor":"30","gitVersion":"v1.30.0"}`))
			return
		}
		http.NotFound(w, r)
	}))
	// A client that hangs up mid-handshake is logged on stderr, in the
	// middle of the benchmark's result line that make bench parses.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	b.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kubeconfig := base64.StdEncoding.EncodeToString([]byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: ` + srv.URL + `
    certificate-authority-data: ` + base64.StdEncoding.EncodeToString(ca) + `
users:
- name: u
  user:
    token: bench-token
contexts:
- name: c
  context: {cluster: c, user: u, namespace: bench}
current-context: c
`))
	j := newJob(b, "")
	withShim(j)
	for i, a := range j.args {
		if a == "--kube-sources=none" {
			j.args[i] = "--kube-sources=kubeconfig,cluster-vars"
		}
	}
	j.vars["KUBECONFIG"] = kubeconfig
	return j
}

// The holder is started in the background of prepare (its fork/exec and
// the env.json write overlap the sandbox's prepare) and its engine exec'd
// once prepare has exited: prepare still waits for the start, so when
// prepare returns the holder runs, its PID file is there for cleanup, the
// job's env names its socket, and the engine replaces the waiting shell
// soon after; cleanup stops it.
func TestLockHolderRunsWhenPrepareReturns(t *testing.T) {
	j := lockJob(t)
	for i := 0; i < 3; i++ {
		j.mustPrepare()
		dir := j.state().Path("lock")
		pid, running := lockclient.HolderPID(dir)
		if !running {
			t.Fatalf("prepare %d returned without a running lock holder (PID file in %s)", i, dir)
		}
		// The engine is exec'd in place of the waiting shell once prepare
		// has exited (lockclient.StartAfterExit).
		sh, _ := filepath.EvalSymlinks("/bin/sh")
		deadline := time.Now().Add(10 * time.Second)
		for {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if err != nil {
				t.Fatalf("prepare %d: the lock holder %d ended: %v", i, pid, err)
			}
			if exe != sh && !strings.HasSuffix(exe, "/sh") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("prepare %d: the lock holder %d is still %s 10 s after prepare returned", i, pid, exe)
			}
			time.Sleep(5 * time.Millisecond)
		}
		env, err := j.state().Env()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range env {
			found = found || e.Key == lockclient.SocketEnv && e.Value == filepath.Join(dir, lockclient.SocketFile)
		}
		if !found {
			t.Fatalf("prepare %d: %s not in the job's env: %v", i, lockclient.SocketEnv, env)
		}
		if r := j.ferry("cleanup"); r.code != 0 {
			t.Fatalf("cleanup: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		deadline = time.Now().Add(10 * time.Second)
		for jobproc.Running(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("the lock holder %d still runs 10 s after cleanup", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func BenchmarkLockPrepareCost(b *testing.B) {
	j := lockJob(b)
	prep := func(lock bool) time.Duration {
		c := j.cmd("prepare", "--deploy-lock="+map[bool]string{true: "true", false: "false"}[lock])
		start := time.Now()
		out, err := c.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("prepare --deploy-lock=%v: %v %s", lock, err, out)
		}
		dir := j.state().Path("lock")
		pid, running := lockclient.HolderPID(dir)
		if running != lock {
			b.Fatalf("prepare --deploy-lock=%v: holder running %v\n%s", lock, running, out)
		}
		// The runner's own stages come between prepare and cleanup: the
		// holder's start finishes there (its CPU is not prepare's but is
		// spent all the same: e2e BenchmarkLockFree's holder-cpu-ms), and
		// the next prepare does not compete with a holder still starting.
		time.Sleep(200 * time.Millisecond)
		if r := j.ferry("cleanup"); r.code != 0 {
			b.Fatalf("cleanup: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		if _, err := os.Stat(dir); err == nil {
			b.Fatalf("cleanup left %s", dir)
		}
		for deadline := time.Now().Add(10 * time.Second); lock && jobproc.Running(pid); {
			if time.Now().After(deadline) {
				b.Fatalf("the lock holder %d still runs 10 s after cleanup", pid)
			}
			time.Sleep(2 * time.Millisecond)
		}
		return d
	}
	prep(true) // unpacks the engine
	prep(false)
	var d, on, off []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var with, without time.Duration
		if i%2 == 0 {
			with, without = prep(true), prep(false)
		} else {
			without, with = prep(false), prep(true)
		}
		d = append(d, float64(with-without)/1e6)
		on = append(on, float64(with)/1e6)
		off = append(off, float64(without)/1e6)
	}
	b.StopTimer()
	med, lo, hi := benchstat.MedianCI(d)
	b.ReportMetric(med, "lock-ms/prepare")
	b.ReportMetric(lo, "lock-lo-ms")
	b.ReportMetric(hi, "lock-hi-ms")
	b.ReportMetric(median(on), "prepare-on-ms")
	b.ReportMetric(median(off), "prepare-off-ms")
}
