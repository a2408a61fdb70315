package deploylock_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/ferry-ci/ferry/internal/benchstat"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/pkg/deploylock"
	"gitlab.com/ferry-ci/ferry/pkg/deploylock/lockclient"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
)

var (
	kubectlOnce sync.Once
	kubectlBin  string // the job's small kubectl, the engine beside it
	kubectlErr  error
)

func jobKubectl(tb testing.TB) (kubectl, engine string) {
	tb.Helper()
	kubectlOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-lock-kubectl-")
		if err != nil {
			kubectlErr = err
			return
		}
		kubectlBin, kubectlErr = ferrybuild.BuildKubectl(dir)
	})
	if kubectlErr != nil {
		tb.Fatal(kubectlErr)
	}
	return kubectlBin, filepath.Join(filepath.Dir(kubectlBin), "ferry-engine")
}

func namespace(tb testing.TB, ns string) {
	tb.Helper()
	_, err := c.Client().CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
}

// holderConfig is a holder for a "job" whose runner is runnerPID and whose
// executor call carries JOB_RESPONSE_FILE=jrf.
func holderConfig(tb testing.TB, id string, runnerPID int, lease time.Duration) lockclient.Config {
	return lockclient.Config{
		Dir: filepath.Join(tb.TempDir(), "lock"), Kubeconfig: c.AdminKubeconfigPath, ID: id,
		Project: "bench/" + id, Pipeline: "1", Job: "1", LeaseDuration: lease, Deadline: time.Now().Add(time.Hour),
		UID: os.Getuid(), JobResponseFile: "/jrf/" + id, RunnerPID: runnerPID,
	}
}

// The runner process dies while its job holds the lock: the holder sees it
// (pidfd) and releases at once, long before the lease (30 s) runs out.
func TestRunnerDeathReleases(t *testing.T) {
	const ns = "lock-runner-death"
	namespace(t, ns)
	kubectl, engine := jobKubectl(t)
	// The "runner": a shell that starts the job's kubectl (which carries
	// the executor call's JOB_RESPONSE_FILE) once the holder runs.
	runner := exec.Command("bash", "-c", `read go; JOB_RESPONSE_FILE=$JRF "$KUBECTL" -n `+ns+` create configmap rd --from-literal=a=b >&2 && echo DONE; sleep 60`)
	in, _ := runner.StdinPipe()
	out, _ := runner.StdoutPipe()
	runner.Stderr = os.Stderr
	cfg := holderConfig(t, "runner-death", 0, 30*time.Second)
	runner.Env = append(os.Environ(), "KUBECONFIG="+c.AdminKubeconfigPath, "KUBECTL="+kubectl, "JRF="+cfg.JobResponseFile,
		lockclient.SocketEnv+"="+filepath.Join(cfg.Dir, lockclient.SocketFile))
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	defer runner.Process.Kill()
	cfg.RunnerPID = runner.Process.Pid
	if err := lockclient.Start(engine, cfg); err != nil {
		t.Fatal(err)
	}
	defer lockclient.Stop(cfg.Dir)
	fmt.Fprintln(in, "go")
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "DONE" {
			b, _ := os.ReadFile(filepath.Join(cfg.Dir, lockclient.LogFile))
			t.Fatalf("kubectl: %q; holder log:\n%s", s, b)
		}
	case <-time.After(time.Minute):
		t.Fatal("kubectl did not finish within a minute")
	}
	if _, ok := lease(t, ns, deploylock.LeaseName("")); !ok {
		t.Fatal("no Lease while the job holds the lock")
	}
	killed := time.Now()
	runner.Process.Kill()
	runner.Wait()
	for {
		if _, ok := lease(t, ns, deploylock.LeaseName("")); !ok {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatal("the Lease is still there 10 s after the runner died (lease 30 s)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("released %s after the runner died", time.Since(killed).Round(time.Millisecond))
}

// Waiters go first come, first served, and each gets the lock as soon as
// the previous holder releases it.
func TestFirstComeFirstServed(t *testing.T) {
	const ns = "lock-fifo"
	namespace(t, ns)
	target := deploylock.Target{Namespace: ns, Name: deploylock.LeaseName("production"), Env: "production"}
	lock := func(id string) *deploylock.Lock {
		return &deploylock.Lock{Client: c.Client(), Me: deploylock.Who{ID: id, Project: "p/" + id, Pipeline: "1", Job: id}, Duration: 10 * time.Second}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := lock("first")
	if err := first.Acquire(ctx, target, func(s string) { t.Errorf("first waited: %s", s) }); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var lines []string
	var wg sync.WaitGroup
	for i := 1; i <= 4; i++ {
		id := fmt.Sprintf("w%d", i)
		queued := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := lock(id)
			if err := k.Acquire(ctx, target, func(s string) { mu.Lock(); lines = append(lines, s); mu.Unlock(); close(queued) }); err != nil {
				t.Error(err)
				close(queued)
				return
			}
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			if err := k.Release(ctx, target); err != nil {
				t.Error(err)
			}
		}()
		<-queued // the next one arrives after this one queued
	}
	if err := first.Release(ctx, target); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if got := strings.Join(order, ","); got != "w1,w2,w3,w4" {
		t.Errorf("order %s, want w1,w2,w3,w4", got)
	}
	for i, l := range lines {
		want := fmt.Sprintf(`environment "production" in namespace lock-fifo is held by p/first pipeline 1 job first since`)
		if !strings.Contains(l, want) || !strings.Contains(l, fmt.Sprintf("; %d job(s) wait before this one", i)) {
			t.Errorf("waiting line %d: %q", i, l)
		}
	}
	if _, ok := lease(t, ns, target.Name); ok {
		t.Error("a Lease is left after the last release")
	}
}

// holderLogOf is the holder's log, for a failure's message, when env
// names a holder's socket.
func holderLogOf(env []string) string {
	for _, kv := range env {
		if sock, ok := strings.CutPrefix(kv, lockclient.SocketEnv+"="); ok {
			b, _ := os.ReadFile(filepath.Join(filepath.Dir(sock), lockclient.LogFile))
			return "\nholder.log:\n" + string(b)
		}
	}
	return ""
}

// cpuOf is the CPU time pid has used (its threads', from schedstat, in
// nanoseconds), or 0 once it is gone.
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	ns, _ := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns)
}

func medianOf(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// medianCI is the median of ds and its 95% confidence interval, in ms.
func medianCI(ds []time.Duration) (med, lo, hi float64) {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = msOf(d)
	}
	return benchstat.MedianCI(ms)
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkLockFree is what the lock adds to one job deploying the seed
// (a Deployment and a Service) when nobody else holds it, side by side
// with the lock off in the same run, job by job: prepare starting the
// holder, the job's first `kubectl apply` (which takes the lock) and its
// second one (lock already held: the holder's mark, no request), and
// cleanup stopping the holder (a signal: the holder deletes the Lease after
// cleanup returned; lease-gone-ms is when, outside the job's time, and each
// job waits for it and for the holder's exit). Between prepare and the
// script the runner runs its own stages; a pause stands for them, outside
// the timings, on both sides.
//
// floor-ms is the physical floor of a lock held in the cluster: one write,
// a Lease created from this process over a warm connection, once per job
// outside the timings.
//
// Each job with the lock is paired with one without, and the two take
// turns at going first. added-ms/job is the median of the paired
// differences of the deploy (both applies), plus the holder's start and
// cleanup's stop; -lo and -hi bound it with the median's 95% confidence
// interval. One apply on this shared machine moves by more than the lock
// costs: the interval says how far the median can be trusted, and more
// jobs (-benchtime) narrow it.
func BenchmarkLockFree(b *testing.B) {
	const ns = "lock-bench"
	namespace(b, ns)
	kubectl, engine := jobKubectl(b)
	dir := b.TempDir()
	for _, f := range []string{"deployment.yaml", "service.yaml"} {
		data, err := os.ReadFile(filepath.Join("../../testdata/manifests/seed", f))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	home := b.TempDir()
	apply := func(env ...string) time.Duration {
		cmd := exec.Command(kubectl, "-n", ns, "apply", "-f", dir)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "KUBECONFIG=" + c.AdminKubeconfigPath,
			"FERRY_STATE_DIR=" + filepath.Join(home, "state")}, env...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("kubectl apply: %v\n%s%s", err, out, holderLogOf(env))
		}
		return d
	}
	apply() // warm the discovery cache
	del := func() {
		c.Client().AppsV1().Deployments(ns).Delete(context.Background(), "shark-app", metav1.DeleteOptions{})
	}
	// The runner's stages between prepare and the script: the holder
	// finishes starting (its engine's init, its connection) within them.
	const pause = 150 * time.Millisecond
	type deploy struct{ first, again time.Duration }
	var offs, ons []deploy
	var starts, stops, gone, holderCPU, floor []time.Duration
	off := func() {
		del()
		time.Sleep(pause)
		var d deploy
		d.first = apply()
		d.again = apply()
		offs = append(offs, d)
	}
	on := func(i int) {
		del()
		cfg := holderConfig(b, fmt.Sprintf("bench-%d", i), os.Getpid(), 15*time.Second)
		t0 := time.Now()
		if err := lockclient.Start(engine, cfg); err != nil {
			b.Fatal(err)
		}
		starts = append(starts, time.Since(t0))
		time.Sleep(pause)
		env := []string{"JOB_RESPONSE_FILE=" + cfg.JobResponseFile, lockclient.SocketEnv + "=" + filepath.Join(cfg.Dir, lockclient.SocketFile)}
		var d deploy
		d.first = apply(env...)
		d.again = apply(env...)
		ons = append(ons, d)
		pid, _ := lockclient.HolderPID(cfg.Dir)
		holderCPU = append(holderCPU, cpuOf(pid))
		t1 := time.Now()
		if err := lockclient.Stop(cfg.Dir); err != nil {
			b.Fatal(err)
		}
		stops = append(stops, time.Since(t1))
		// Cleanup does not wait for the release: how long the Lease stays
		// after cleanup returned (what a job waiting for the lock sees),
		// and the holder must be gone soon after.
		for {
			if _, ok := lease(b, ns, deploylock.LeaseName("")); !ok {
				break
			}
			if time.Since(t1) > 5*time.Second {
				b.Fatal("the Lease is still there 5 s after cleanup")
			}
			time.Sleep(time.Millisecond)
		}
		gone = append(gone, time.Since(t1))
		for jobproc.Running(pid) {
			if time.Since(t1) > 5*time.Second {
				b.Fatalf("the lock holder %d still runs 5 s after cleanup", pid)
			}
			time.Sleep(time.Millisecond)
		}
		// The floor: what holding anything in the cluster costs at the
		// least, one write (a Lease created over a warm connection).
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "bench-floor"}}
		t2 := time.Now()
		if _, err := c.Client().CoordinationV1().Leases(ns).Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		floor = append(floor, time.Since(t2))
		if err := c.Client().CoordinationV1().Leases(ns).Delete(context.Background(), "bench-floor", metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			off()
			on(i)
		} else {
			on(i)
			off()
		}
	}
	b.StopTimer()
	paired := func(f func(deploy) time.Duration) (med, lo, hi float64) {
		d := make([]time.Duration, len(ons))
		for i := range ons {
			d[i] = f(ons[i]) - f(offs[i])
		}
		return medianCI(d)
	}
	both, lo, hi := paired(func(d deploy) time.Duration { return d.first + d.again })
	first, flo, fhi := paired(func(d deploy) time.Duration { return d.first })
	again, alo, ahi := paired(func(d deploy) time.Duration { return d.again })
	start, stop := medianOf(starts), medianOf(stops)
	offFirst := make([]time.Duration, len(offs))
	for i, d := range offs {
		offFirst[i] = d.first
	}
	b.ReportMetric(float64(len(ons)), "pairs")
	b.ReportMetric(msOf(medianOf(offFirst)), "apply-off-ms")
	fixed := msOf(start + stop)
	b.ReportMetric(both+fixed, "added-ms/job")
	b.ReportMetric(lo+fixed, "added-lo-ms")
	b.ReportMetric(hi+fixed, "added-hi-ms")
	b.ReportMetric(first, "take-ms")
	b.ReportMetric(flo, "take-lo-ms")
	b.ReportMetric(fhi, "take-hi-ms")
	b.ReportMetric(again, "held-ms")
	b.ReportMetric(alo, "held-lo-ms")
	b.ReportMetric(ahi, "held-hi-ms")
	b.ReportMetric(msOf(start), "start-ms")
	b.ReportMetric(msOf(stop), "release-ms")
	b.ReportMetric(msOf(medianOf(gone)), "lease-gone-ms")
	b.ReportMetric(msOf(medianOf(holderCPU)), "holder-cpu-ms")
	b.ReportMetric(msOf(medianOf(floor)), "floor-ms")
}

// BenchmarkLockHandoff is how long the lock takes to pass from a job that
// releases it to the job waiting for it (watch, read, update).
func BenchmarkLockHandoff(b *testing.B) {
	const ns = "lock-handoff"
	namespace(b, ns)
	target := deploylock.Target{Namespace: ns, Name: deploylock.LeaseName("")}
	var ds []time.Duration
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		a := &deploylock.Lock{Client: c.Client(), Me: deploylock.Who{ID: fmt.Sprintf("a%d", i)}, Duration: 15 * time.Second}
		w := &deploylock.Lock{Client: c.Client(), Me: deploylock.Who{ID: fmt.Sprintf("b%d", i)}, Duration: 15 * time.Second}
		if err := a.Acquire(ctx, target, func(string) {}); err != nil {
			b.Fatal(err)
		}
		queued := make(chan struct{})
		got := make(chan time.Time, 1)
		go func() {
			if err := w.Acquire(ctx, target, func(string) { close(queued) }); err != nil {
				b.Error(err)
			}
			got <- time.Now()
		}()
		<-queued
		time.Sleep(20 * time.Millisecond) // the waiter is in its watch
		t0 := time.Now()
		if err := a.Release(ctx, target); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, (<-got).Sub(t0))
		if err := w.Release(ctx, target); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(msOf(medianOf(ds)), "handoff-ms")
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(msOf(ds[len(ds)-1]), "handoff-max-ms")
}
