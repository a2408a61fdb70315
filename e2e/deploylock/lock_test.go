// Package deploylock_test proves the deploy lock (docs/deploy-safety.md)
// against a real API server through the runner-faithful driver: separate
// runner hosts (drivers with their own --state-dir) and projects deploying
// to one namespace.
package deploylock_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/e2e/seeds"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	rd "gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/deploylock"
)

var (
	c     *cluster.Cluster
	ferry string
)

func TestMain(m *testing.M) {
	var err error
	if ferry, err = ferrybuild.Shared(); err != nil {
		panic(err)
	}
	cluster.Main(m, &c)
}

// host is one runner host: its own driver, state dir and HOME.
func host(t *testing.T, args ...string) *rd.Driver {
	t.Helper()
	base := t.TempDir()
	home := filepath.Join(base, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := rd.New(rd.Config{
		FerryBinary: ferry,
		BaseDir:     base,
		// The lock alone is under test: its jobs apply one object from
		// several projects and pipelines in no set order, which the deploy
		// guard (e2e/deployguard) would rightly refuse. (The driver now
		// makes its repositories readable under a private /tmp.)
		ExtraArgs: append([]string{"--state-dir=" + seeds.StateDir(base), "--deploy-guard=false"}, args...),
		Env:       []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func saCreds(t *testing.T, ns string) *cluster.Credentials {
	t.Helper()
	sa, err := c.ServiceAccountCredentials(context.Background(), ns, "gitlab-deployer", "admin")
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// pipeline is one project's deploy job with the masked KUBECONFIG variable.
func pipeline(project string, sa *cluster.Credentials, job rd.Job) rd.Pipeline {
	job.Variables = append(job.Variables, rd.Variable{Key: "KUBECONFIG", Value: sa.KubeconfigBase64, Masked: true})
	return rd.Pipeline{ProjectPath: project, Jobs: []rd.Job{job}}
}

func lease(t testing.TB, ns, name string) (*coordinationv1.Lease, bool) {
	t.Helper()
	l, err := c.Client().CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return l, true
}

// leaseGone waits until the Lease is gone: cleanup does not wait for the
// holder's release, which lands shortly after it (releaseWithin).
func leaseGone(t testing.TB, ns, name string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		l, ok := lease(t, ns, name)
		if !ok {
			return time.Since(start)
		}
		if time.Since(start) > releaseWithin {
			t.Fatalf("the Lease %s/%s is still there %s after the jobs' cleanup: %+v", ns, name, releaseWithin, l)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// releaseWithin bounds the release after cleanup: one DELETE (two requests
// when a waiter queued meanwhile) on a loaded test machine.
const releaseWithin = 3 * time.Second

// A job takes the lock and ends: its cleanup signals the holder and
// returns at once, and the Lease is gone shortly after (the holder
// releases on its own, then exits); the next job takes the lock freely.
func TestReleasedShortlyAfterCleanup(t *testing.T) {
	const ns = "lock-release"
	sa := saCreds(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := host(t)
	for i := range 3 {
		pr := d.RunPipeline(ctx, pipeline("team-a/web", sa, rd.Job{Name: "deploy", Stage: "deploy", Script: []string{
			fmt.Sprintf("kubectl create configmap r%d --from-literal=a=b", i),
			// A later call of the same job finds the lock held (the
			// holder's mark) and goes on at once.
			fmt.Sprintf("kubectl label configmap r%d x=y", i)}}))
		j := pr.Jobs["deploy"]
		if j.Status != rd.StatusSuccess || strings.Contains(j.Log, "deploy lock") {
			t.Fatalf("job %d: %s\n%s\nsystem log:\n%s", i, j.Status, j.Log, j.SystemLog)
		}
		took := leaseGone(t, ns, deploylock.LeaseName(""))
		t.Logf("job %d: the Lease was gone %s after the driver saw cleanup end", i, took.Round(time.Millisecond))
		// And its holder has ended.
		deadline := time.Now().Add(releaseWithin)
		for holders(t) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("job %d: a deploy-lock-holder still runs %s after cleanup", i, releaseWithin)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// holders counts this test process's lock holders (their command line
// names a dir below this process's temp dirs).
func holders(t *testing.T) int {
	t.Helper()
	return len(lockHolderPIDs("/" + t.Name()))
}

// lockHolderPIDs lists the running deploy-lock-holder processes whose dir
// argument contains part.
func lockHolderPIDs(part string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) < 3 || args[1] != "deploy-lock-holder" || !strings.Contains(args[2], part) {
			continue
		}
		var pid int
		fmt.Sscan(strings.TrimSuffix(strings.TrimPrefix(p, "/proc/"), "/cmdline"), &pid)
		pids = append(pids, pid)
	}
	return pids
}

// The seed's ServiceAccount (ClusterRole admin bound in its namespace) may
// write Leases: the lock needs nothing more from the namespace's admin.
func TestAdminMayWriteLeases(t *testing.T) {
	sa := saCreds(t, "lock-rbac")
	cfg, err := clientcmd.RESTConfigFromKubeConfig(sa.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cl := kubernetes.NewForConfigOrDie(cfg)
	for _, verb := range []string{"get", "list", "watch", "create", "update", "delete"} {
		r, err := cl.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authv1.SelfSubjectAccessReview{
			Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authv1.ResourceAttributes{
				Namespace: "lock-rbac", Verb: verb, Group: "coordination.k8s.io", Resource: "leases"}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !r.Status.Allowed {
			t.Errorf("ClusterRole admin in its namespace may not %s leases: %s", verb, r.Status.Reason)
		}
	}
}

// Two projects on two runner hosts deploy to one namespace at once. Each
// job applies the shared ConfigMap (its own mark), sleeps, reads back what
// the object says, then applies again: with the lock each job finds its own
// mark after the sleep (nobody wrote in between); without it (the control
// run, --deploy-lock=false) one of them finds the other's.
func TestTwoProjectsTwoHostsAreSerialised(t *testing.T) {
	sa := saCreds(t, "lock-serial")
	observed := func(log string) string {
		m := regexp.MustCompile(`(?m)^OBSERVED=([\w-]*)`).FindStringSubmatch(log)
		if m == nil {
			return ""
		}
		return m[1]
	}
	run := func(t *testing.T, name string, args ...string) map[string]*rd.JobResult {
		hosts := []*rd.Driver{host(t, args...), host(t, args...)}
		projects := []string{"team-a/web", "team-b/api"}
		res := map[string]*rd.JobResult{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mark := fmt.Sprintf("%s-%d", name, i)
				job := rd.Job{Name: "deploy", Stage: "deploy", Script: []string{
					"kubectl create configmap shared --from-literal=by=" + mark + " --dry-run=client -o yaml > cm.yaml",
					"kubectl apply -f cm.yaml",
					"sleep 3",
					"echo OBSERVED=$(kubectl get configmap shared -o 'jsonpath={.data.by}')",
					"kubectl apply -f cm.yaml",
				}}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				pr := hosts[i].RunPipeline(ctx, pipeline(projects[i], sa, job))
				mu.Lock()
				res[mark] = pr.Jobs["deploy"]
				mu.Unlock()
			}()
		}
		wg.Wait()
		return res
	}

	res := run(t, "locked")
	waited := 0
	for mark, j := range res {
		if j == nil || j.Status != rd.StatusSuccess {
			t.Fatalf("%s: %+v", mark, j)
		}
		if got := observed(j.Log); got != mark {
			t.Errorf("%s found %q in the ConfigMap after its sleep: another job wrote in between\n%s\nsystem log:\n%s", mark, got, j.Log, j.SystemLog)
		}
		if strings.Contains(j.Log, "ferry: deploy lock: namespace lock-serial is held by team-") {
			waited++
			if !regexp.MustCompile(`is held by team-[ab]/(web|api) pipeline \d+ job \d+ since \d\d:\d\d:\d\d; 0 job\(s\) wait before this one`).MatchString(j.Log) {
				t.Errorf("%s: the waiting line does not name the holder:\n%s", mark, j.Log)
			}
		}
	}
	if waited != 1 {
		t.Errorf("%d jobs printed the waiting line, want exactly 1", waited)
	}
	leaseGone(t, "lock-serial", deploylock.LeaseName(""))

	// Control: the same jobs without the lock interleave, so the check
	// above can fail.
	res = run(t, "unlocked", "--deploy-lock=false")
	interleaved := false
	for mark, j := range res {
		if j == nil || j.Status != rd.StatusSuccess {
			t.Fatalf("%s: %+v", mark, j)
		}
		if observed(j.Log) != mark {
			interleaved = true
		}
	}
	if !interleaved {
		t.Errorf("control without the lock: no job saw the other's write; the test cannot tell serialised from not")
	}
}

// waitLog waits (bounded) until the job's log, fed by OnLog, contains s.
type logWatch struct {
	mu  sync.Mutex
	log []byte
}

func (w *logWatch) on(b []byte) bool {
	w.mu.Lock()
	w.log = append(w.log[:0], b...)
	w.mu.Unlock()
	return false
}

func (w *logWatch) wait(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		ok := strings.Contains(string(w.log), s)
		w.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Fatalf("no %q in the log within %s:\n%s", s, d, w.log)
}

// A holder whose host is lost (its holder process and its job SIGKILLed,
// nothing released) loses the lock once its lease runs out: the waiting job
// gets it within the lease (3 s here) plus a renewal period.
func TestLostHolderExpires(t *testing.T) {
	const ns = "lock-expiry"
	sa := saCreds(t, ns)
	const leaseDur = 3 * time.Second
	baseA := host(t, fmt.Sprintf("--deploy-lock-lease=%s", leaseDur))
	a := &logWatch{}
	var wg sync.WaitGroup
	wg.Add(1)
	actx, acancel := context.WithTimeout(context.Background(), time.Minute)
	defer acancel()
	go func() {
		defer wg.Done()
		baseA.RunPipeline(actx, pipeline("team-a/web", sa, rd.Job{Name: "deploy", Stage: "deploy", OnLog: a.on, Script: []string{
			"kubectl create configmap a --from-literal=x=1", "echo HOLDING", "sleep 40"}}))
	}()
	a.wait(t, "HOLDING", time.Minute)
	b := &logWatch{}
	wg.Add(1)
	var bRes *rd.JobResult
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pr := host(t, fmt.Sprintf("--deploy-lock-lease=%s", leaseDur)).RunPipeline(ctx, pipeline("team-b/api", sa, rd.Job{Name: "deploy", Stage: "deploy", OnLog: b.on, Script: []string{
			"kubectl create configmap b --from-literal=x=1", "echo TOOK"}}))
		bRes = pr.Jobs["deploy"]
	}()
	b.wait(t, "is held by team-a/web", 30*time.Second)
	// The host is lost: its holder and its whole job die at once, and
	// nothing of A's runs cleanup before B takes over.
	pid := lockHolderOf(t, "team-a/web")
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.wait(t, "TOOK", 30*time.Second)
	waited := time.Since(killed)
	if limit := leaseDur + leaseDur/3 + 2*time.Second; waited > limit {
		t.Errorf("B took the lock %s after A's holder died, want at most the lease %s (+ slack)", waited, leaseDur)
	}
	t.Logf("B got the lock %s after A's holder was SIGKILLed (lease %s)", waited.Round(time.Millisecond), leaseDur)
	acancel()
	wg.Wait()
	if bRes == nil || bRes.Status != rd.StatusSuccess {
		t.Fatalf("B: %+v", bRes)
	}
}

// lockHolderOf finds the pid of the lock holder serving project's job: the
// holder's command line names its dir; its config is not readable from
// outside, so the Lease's holder annotation and the dir's holder.pid are
// matched by the job id.
func lockHolderOf(t *testing.T, project string) int {
	t.Helper()
	l, ok := lease(t, "lock-expiry", deploylock.LeaseName(""))
	if !ok {
		t.Fatal("no lease")
	}
	var who deploylock.Who
	if err := json.Unmarshal([]byte(l.Annotations[deploylock.HolderAnnotation]), &who); err != nil || who.Project != project {
		t.Fatalf("lease holder %q, want %s", l.Annotations[deploylock.HolderAnnotation], project)
	}
	pids := lockHolderPIDs("-" + who.Job + "/")
	if len(pids) == 0 {
		t.Fatalf("no deploy-lock-holder process for job %s", who.Job)
	}
	return pids[0]
}

// A ServiceAccount whose role does not cover Leases gets one line naming
// the Role and RoleBinding to add, at once (no wait, no hang).
func TestNoLeasePermissionIsOneLine(t *testing.T) {
	const ns = "lock-norbac"
	ctx := context.Background()
	_, err := c.Client().RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "configmaps-only"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"*"}}}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa, err := c.ServiceAccountCredentials(ctx, ns, "cm-only", "configmaps-only")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	pr := host(t).RunPipeline(cctx, pipeline("team-a/web", sa, rd.Job{Name: "deploy", Stage: "deploy", Script: []string{
		"kubectl get configmap -o name", "echo READ-OK", "kubectl create configmap x --from-literal=a=b"}}))
	j := pr.Jobs["deploy"]
	if j.Status != rd.StatusFailed || j.ScriptExitCode != 1 {
		t.Fatalf("want a script failure with kubectl's exit 1, got %s/%d:\n%s\nsystem log:\n%s", j.Status, j.ScriptExitCode, j.Log, j.SystemLog)
	}
	want := "error: ferry: deploy lock: the job's credentials may not create leases.coordination.k8s.io in namespace lock-norbac; " +
		"the namespace's admin must add: kubectl -n lock-norbac create role ferry-deploy-lock --verb=get,list,watch,create,update,delete --resource=leases.coordination.k8s.io " +
		"&& kubectl -n lock-norbac create rolebinding ferry-deploy-lock --role=ferry-deploy-lock --serviceaccount=lock-norbac:cm-only (or the runner's admin turns the lock off: --deploy-lock=false)\n"
	if !strings.Contains(j.Log, "READ-OK") || !strings.Contains(j.Log, want) {
		t.Errorf("want the read to pass and the one line %q in:\n%s", want, j.Log)
	}
	if _, err := c.Client().CoreV1().ConfigMaps(ns).Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the ConfigMap was created without the lock: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the job took %s", d)
	}
	// The line's advice works: with the Role and RoleBinding it prints, the
	// same job deploys.
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "ferry-deploy-lock", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
			Verbs: []string{"get", "list", "watch", "create", "update", "delete"}}}}
	if _, err := c.Client().RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ferry-deploy-lock", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "ferry-deploy-lock"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "cm-only", Namespace: ns}}}
	if _, err := c.Client().RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		pr = host(t).RunPipeline(cctx, pipeline("team-a/web", sa, rd.Job{Name: "deploy", Stage: "deploy", Script: []string{
			"kubectl create configmap x --from-literal=a=b"}}))
		if j = pr.Jobs["deploy"]; j.Status == rd.StatusSuccess || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond) // RBAC sees the binding through an informer
	}
	if j.Status != rd.StatusSuccess {
		t.Errorf("with the Role and RoleBinding the line names, the job still fails:\n%s\nsystem log:\n%s", j.Log, j.SystemLog)
	}
}

// Cancelling a waiting job leaves nothing of it in the lock; reads
// (get, diff, dry runs) never wait for a held lock nor take it; and when
// the holder ends, a free target leaves no Lease behind.
func TestCancelWhileWaitingAndReads(t *testing.T) {
	const ns = "lock-cancel"
	sa := saCreds(t, ns)
	a := &logWatch{}
	var wg sync.WaitGroup
	wg.Add(1)
	// A holds the lock until the test creates the ConfigMap go-on (a
	// read, which takes no lock: a file under the test's /tmp is not seen
	// from the job's private /tmp, and A then held it for its whole minute).
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		host(t).RunPipeline(ctx, pipeline("team-a/web", sa, rd.Job{Name: "deploy", Stage: "deploy", OnLog: a.on, Script: []string{
			"kubectl create configmap a --from-literal=x=1", "echo HOLDING",
			"for i in $(seq 600); do kubectl get configmap go-on -o name >/dev/null 2>&1 && break; sleep 0.1; done"}}))
	}()
	a.wait(t, "HOLDING", time.Minute)

	// Reads while the lock is held: no wait, no line, no queue entry.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pr := host(t).RunPipeline(ctx, pipeline("team-c/reader", sa, rd.Job{Name: "read", Stage: "deploy", Script: []string{
		"kubectl get configmap a -o name",
		"kubectl create configmap r --from-literal=x=1 --dry-run=client -o yaml > r.yaml",
		"kubectl diff -f r.yaml || true",
		"kubectl apply -f r.yaml --dry-run=server",
		"kubectl create configmap r2 --from-literal=x=1 --dry-run=server",
		"kubectl delete configmap a --dry-run=server",
		"kubectl rollout history deployment/none || true",
		"kubectl describe configmap a > /dev/null",
	}}))
	r := pr.Jobs["read"]
	if r.Status != rd.StatusSuccess || strings.Contains(r.Log, "deploy lock") {
		t.Errorf("reads while the lock is held: %s\n%s\nsystem log:\n%s", r.Status, r.Log, r.SystemLog)
	}
	if l, _ := lease(t, ns, deploylock.LeaseName("")); strings.Contains(l.Annotations[deploylock.QueueAnnotation], "team-c") {
		t.Errorf("a read queued for the lock: %v", l.Annotations)
	}

	// A writer waits, then is cancelled while waiting.
	b := &logWatch{}
	var bRes *rd.JobResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		pr := host(t).RunPipeline(ctx, pipeline("team-b/api", sa, rd.Job{Name: "deploy", Stage: "deploy", OnLog: b.on,
			CancelOnLog: "ferry: deploy lock: namespace lock-cancel is held by team-a/web",
			Script:      []string{"kubectl delete configmap a"}}))
		bRes = pr.Jobs["deploy"]
	}()
	b.wait(t, "is held by team-a/web", 30*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, ok := lease(t, ns, deploylock.LeaseName(""))
		if !ok {
			t.Fatal("the lease vanished while team-a holds it")
		}
		if !strings.Contains(l.Annotations[deploylock.QueueAnnotation], "team-b") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cancelled waiter is still queued: %s", l.Annotations[deploylock.QueueAnnotation])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.Client().CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "go-on"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if bRes == nil || bRes.Status != rd.StatusCanceled {
		t.Errorf("B: want canceled, got %+v", bRes)
	}
	if _, err := c.Client().CoreV1().ConfigMaps(ns).Get(context.Background(), "a", metav1.GetOptions{}); err != nil {
		t.Errorf("the cancelled job's delete ran: %v", err)
	}
	leaseGone(t, ns, deploylock.LeaseName(""))
}
