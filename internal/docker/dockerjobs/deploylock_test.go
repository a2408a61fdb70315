package dockerjobs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/docker/enginelock"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
)

// lockHost is one runner host (its own HOME and state dir) running one
// pipeline of one job: the driver's pipeline and job ids are set, so the
// test knows who holds what.
type lockHost struct {
	base string
	d    *runnerdriver.Driver
}

func newLockHost(t *testing.T, pipeline, job int, args ...string) *lockHost {
	t.Helper()
	base := t.TempDir()
	home := filepath.Join(base, "home")
	os.MkdirAll(home, 0o700)
	d, err := runnerdriver.New(runnerdriver.Config{
		FerryBinary: ferryBin,
		BaseDir:     filepath.Join(base, "driver"),
		ExtraArgs: append([]string{"--state-dir=" + filepath.Join(base, "state"), "--kube-sources=none", "--kubectl-shim=false",
			// The driver's repositories live under the test's /tmp dir,
			// which a private /tmp hides from get_sources.
			"--private-tmp=off"}, args...),
		Env:             []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "USER=root", "LANG=C.UTF-8"},
		PrepareAttempts: 1,
		StepScript:      true,
		FirstPipelineID: pipeline, FirstJobID: job,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &lockHost{base: base, d: d}
}

// lockCompose: the service's container is labelled with the job that
// created it; SIGKILL stops it at once (compose v1 recreates by stop).
const lockCompose = `version: "3"
services:
  web:
    image: ${IMAGE}
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
    labels:
      lock.test/job: "${CI_JOB_ID}"
`

func (h *lockHost) run(r *dockertest.Remote, image string, job runnerdriver.Job) *runnerdriver.JobResult {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	job.Name, job.Stage = "deploy", "deploy"
	job.Variables = append(append(ferryVars(r, dockertest.UserOK),
		runnerdriver.Variable{Key: "IMAGE", Value: image},
		// Far below compose v1's 60 s: a wait in the holder longer than
		// this fails the job unless the holder keeps compose waiting.
		runnerdriver.Variable{Key: "COMPOSE_HTTP_TIMEOUT", Value: "3"},
		runnerdriver.Variable{Key: "CI_REGISTRY", Value: r.Registry},
		runnerdriver.Variable{Key: "REG_USER", Value: r.RegUser},
		runnerdriver.Variable{Key: "REG_PASSWORD", Value: r.RegPass, Masked: true}), job.Variables...)
	job.Script = append([]string{"docker login -u $REG_USER -p $REG_PASSWORD $CI_REGISTRY >/dev/null 2>&1"}, job.Script...)
	pr := h.d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-a/app", ProjectID: 101,
		Files: map[string]string{"docker-compose.yml": lockCompose}, Jobs: []runnerdriver.Job{job}})
	return pr.Jobs["deploy"]
}

// upThenReadBack: recreate the project's container (labelled with this
// job), wait, read back which job's container the engine runs.
func upThenReadBack(sleep int) []string {
	return []string{
		"docker-compose -p lockapp up -d --force-recreate > up.log 2>&1 || { cat up.log; exit 1; }",
		fmt.Sprintf("sleep %d", sleep),
		`echo "READBACK $(docker inspect lockapp_web_1 --format '{{index .Config.Labels "lock.test/job"}}')"`,
	}
}

func readBack(t *testing.T, res *runnerdriver.JobResult) string {
	t.Helper()
	log := runnerdriver.StripANSI(res.Log)
	for _, l := range strings.Split(log, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "READBACK "); ok {
			return v
		}
	}
	t.Fatalf("job %d: no READBACK line:\n%s", res.ID, log)
	return ""
}

// mustNotInterleave: jobs a and b succeeded and each read back its own job
// id from what it deployed (the other's deploy did not come in between).
func mustNotInterleave(t *testing.T, a, b *runnerdriver.JobResult) {
	t.Helper()
	mustSucceed(t, a)
	mustSucceed(t, b)
	if ra, rb := readBack(t, a), readBack(t, b); ra != strconv.Itoa(a.ID) || rb != strconv.Itoa(b.ID) {
		t.Fatalf("with the lock, job %d read back %s and job %d read back %s: the deploys interleaved", a.ID, ra, b.ID, rb)
	}
}

// mustWaitBehind: waiter's log has the line naming holder (of project
// team-a/app, pipeline) as the one holding target; it returns that line's
// start.
func mustWaitBehind(t *testing.T, waiter, holder *runnerdriver.JobResult, target string, pipeline int) string {
	t.Helper()
	line := fmt.Sprintf("ferry: deploy lock: %s is held by team-a/app pipeline %d job %d since ", target, pipeline, holder.ID)
	if !strings.Contains(waiter.Log, line) {
		t.Fatalf("job %d: no waiting line %q:\n%s", waiter.ID, line, waiter.Log)
	}
	return line
}

// TestComposeDeployLock: two jobs on two runner hosts deploy one compose
// project at once. With the lock, each finds its own container after its
// sleep (the engine's labels), the second waited, printed one line naming
// the first while it waited, and got the lock when the first job's cleanup
// released it (well before the long lease could run out); with
// --deploy-lock=false the same jobs interleave (the check can fail).
func TestComposeDeployLock(t *testing.T) {
	r := need(t)
	image := r.PushBusybox("lock-web:1")
	t.Cleanup(func() { r.Docker("rm", "-f", "lockapp_web_1") })

	both := func(lockArgs []string) (a, b *runnerdriver.JobResult, waitSeen [2]string) {
		hosts := []*lockHost{newLockHost(t, 71000, 971000, lockArgs...), newLockHost(t, 71000, 971001, lockArgs...)}
		res := make([]*runnerdriver.JobResult, 2)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The second job starts a little later: without the lock
				// it recreates the container while the first one sleeps
				// (at the same instant, compose v1's two recreates break
				// each other instead).
				time.Sleep(time.Duration(i) * 3 * time.Second)
				res[i] = h.run(r, image, runnerdriver.Job{Script: upThenReadBack(8), OnLog: func(log []byte) bool {
					// The waiting line, as the job log has it while the job
					// still runs.
					if s := runnerdriver.StripANSI(string(log)); strings.Contains(s, "ferry: deploy lock:") && !strings.Contains(s, "READBACK") {
						mu.Lock()
						if waitSeen[i] == "" {
							for _, l := range strings.Split(s, "\n") {
								if strings.Contains(l, "is held by") {
									waitSeen[i] = l
								}
							}
						}
						mu.Unlock()
					}
					return false
				}})
			}()
		}
		wg.Wait()
		return res[0], res[1], waitSeen
	}

	a, b, seen := both([]string{"--deploy-lock-lease=60s"})
	mustNotInterleave(t, a, b)
	waiter, holder := a, b
	if strings.Contains(b.Log, "is held by") {
		waiter, holder = b, a
	}
	line := mustWaitBehind(t, waiter, holder, "compose project lockapp", 71000)
	if !strings.Contains(waiter.Log, "; 0 job(s) wait before this one; waiting (up to the job's timeout)") {
		t.Fatalf("job %d: its waiting line does not say how many wait before it:\n%s", waiter.ID, waiter.Log)
	}
	if strings.Contains(holder.Log, "is held by") {
		t.Fatalf("both jobs waited:\n%s\n%s", a.Log, b.Log)
	}
	i := 0
	if waiter == b {
		i = 1
	}
	if !strings.Contains(seen[i], line) {
		t.Errorf("the waiting line did not reach the job log while the job ran (seen: %q)", seen[i])
	}
	// The waiter's container came after the holder's job ended: its
	// cleanup released the lock, the 60 s lease did not run out.
	if d := waiter.Duration - holder.Duration; d > 30*time.Second {
		t.Errorf("the waiter ran %s longer than the holder: released by expiry, not by cleanup?", d)
	}
	// Released: renamed at once, gone once the engine has removed it.
	waitFor(t, 10*time.Second, "no lease containers left on the engine", func() bool {
		return strings.TrimSpace(r.MustDocker("ps", "-a", "--filter", "label="+enginelock.LabelLease, "--format", "{{.Names}}")) == ""
	})

	// Control: the lock off, the same two jobs interleave.
	a, b, _ = both([]string{"--deploy-lock=false"})
	if a.Succeeded() && b.Succeeded() {
		if ra, rb := readBack(t, a), readBack(t, b); ra == strconv.Itoa(a.ID) && rb == strconv.Itoa(b.ID) {
			t.Fatalf("control run without the lock did not interleave (read back %s, %s): the test cannot tell", ra, rb)
		}
	} else {
		// Two recreates at once: compose v1 fails one of them.
		for _, res := range []*runnerdriver.JobResult{a, b} {
			if !res.Succeeded() && !strings.Contains(res.Log, "ERROR: for lockapp_web_1") {
				mustSucceed(t, res)
			}
		}
		t.Logf("control run: the two deploys broke each other")
	}
	if strings.Contains(a.Log+b.Log, "ferry: deploy lock") {
		t.Fatalf("--deploy-lock=false printed a lock line")
	}
}

// lockers are the engine's lock and ticket containers of lockapp, "<role>
// <holder>" per line.
func lockers(r *dockertest.Remote) string {
	tg := enginelock.Target{Kind: "compose project", Name: "lockapp"}
	out, _ := r.Docker("ps", "-a", "--filter", "name="+tg.LockName(), "--filter", "name="+tg.TicketPrefix(),
		"--format", `{{.Names}} {{.Label "`+enginelock.LabelHolder+`"}}`)
	out = strings.ReplaceAll(out, tg.LockName()+" ", "lock ")
	out = regexp.MustCompile(regexp.QuoteMeta(tg.TicketPrefix())+`[0-9a-f]+ `).ReplaceAllString(out, "ticket ")
	return strings.TrimSpace(out)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestComposeDeployLockLostHolderReadsCancel: job A holds the lock and
// sleeps; reads of the project by job R neither wait nor queue; job C
// waits and is cancelled: its ticket goes; job B waits; A's holder is
// SIGKILLed (its host lost): B gets the lock within the lease plus a margin,
// judged from the engine's own times.
func TestComposeDeployLockLostHolderReadsCancel(t *testing.T) {
	r := need(t)
	image := r.PushBusybox("lock-web:2")
	t.Cleanup(func() { r.Docker("rm", "-f", "lockapp_web_1") })
	const lease = 4 * time.Second
	args := []string{"--deploy-lock-lease=" + lease.String()}

	hostA := newLockHost(t, 72000, 972000, args...)
	aDone := make(chan *runnerdriver.JobResult, 1)
	var stopA atomic.Bool
	go func() {
		aDone <- hostA.run(r, image, runnerdriver.Job{Script: []string{
			"docker-compose -p lockapp up -d --force-recreate > up.log 2>&1 || { cat up.log; exit 1; }",
			"for i in $(seq 120); do echo tick; sleep 1; done"},
			OnLog: func([]byte) bool { return stopA.Load() }})
	}()
	waitFor(t, 90*time.Second, "job A takes the lock", func() bool { return strings.HasPrefix(lockers(r), "lock team-a/app pipeline 72000 job 972000") })

	// Reads: no wait, no ticket, no lock line.
	t0 := time.Now()
	rd := newLockHost(t, 72000, 972001, args...).run(r, image, runnerdriver.Job{Script: []string{
		"docker-compose -p lockapp ps", "docker-compose -p lockapp config -q", "docker-compose -p lockapp pull -q",
		"docker-compose -p lockapp logs --tail 1", "docker ps", "docker inspect lockapp_web_1 >/dev/null", "docker images >/dev/null"}})
	mustSucceed(t, rd)
	if strings.Contains(rd.Log, "ferry: deploy lock") {
		t.Fatalf("reads printed a lock line:\n%s", rd.Log)
	}
	t.Logf("read-only job while the lock was held: %s", time.Since(t0).Round(time.Millisecond))

	// C waits, then is cancelled (the UI's cancel) while waiting.
	c := newLockHost(t, 72000, 972002, args...).run(r, image, runnerdriver.Job{Script: upThenReadBack(0), CancelOnLog: "is held by team-a/app pipeline 72000 job 972000"})
	if c.Status != runnerdriver.StatusCanceled {
		t.Fatalf("job C: %s, want canceled:\n%s", c.Status, c.Log)
	}
	// C's holder removes C's ticket after C's job has ended: a holder
	// stopped by cleanup releases once cleanup is over (waitCleanup), so
	// the ticket goes tens of ms after the job's end, not before it (a
	// check at once failed in a clean-clone CI run).
	t1 := time.Now()
	for got := lockers(r); got != "lock team-a/app pipeline 72000 job 972000"; got = lockers(r) {
		if time.Since(t1) > 5*time.Second {
			t.Fatalf("5 s after C's cancel the engine has %q, want only A's lock", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("C's ticket gone %s after its job ended", time.Since(t1).Round(time.Millisecond))

	// B waits; A's holder is killed.
	hostB := newLockHost(t, 72000, 972003, args...)
	bDone := make(chan *runnerdriver.JobResult, 1)
	go func() { bDone <- hostB.run(r, image, runnerdriver.Job{Script: upThenReadBack(0)}) }()
	waitFor(t, 60*time.Second, "job B queues", func() bool { return strings.Contains(lockers(r), "ticket team-a/app pipeline 72000 job 972003") })
	hs := holders(hostA.base)
	if len(hs) != 1 {
		t.Fatalf("job A's holders: %v", hs)
	}
	pid, _ := strconv.Atoi(strings.Fields(hs[0])[0])
	killed := time.Now()
	syscall.Kill(pid, syscall.SIGKILL)
	res := <-bDone
	mustSucceed(t, res)
	if got := readBack(t, res); got != "972003" {
		t.Fatalf("job B read back %s", got)
	}
	created, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(r.MustDocker("inspect", "lockapp_web_1", "--format", "{{.Created}}")))
	if err != nil {
		t.Fatal(err)
	}
	if d := created.Sub(killed); d > lease+3*time.Second {
		t.Fatalf("job B's container was created %s after A's holder died; the lease is %s", d, lease)
	} else {
		t.Logf("A's holder SIGKILLed: B's container created %s later (lease %s)", d.Round(time.Millisecond), lease)
	}
	if !strings.Contains(res.Log, "is held by team-a/app pipeline 72000 job 972000") {
		t.Fatalf("job B: no waiting line naming A:\n%s", res.Log)
	}
	// A's job went on without its holder: cancel it.
	stopA.Store(true)
	select {
	case <-aDone:
	case <-time.After(time.Minute):
		t.Fatal("job A not cancelled within a minute")
	}
	waitFor(t, 10*time.Second, "no lock containers left", func() bool { return lockers(r) == "" })
}

// TestStackDeployLock: two jobs on two runner hosts `docker stack deploy`
// one stack at once (single-node swarm): with the lock each reads back its
// own service label after its sleep and one waited, named in its log; with
// --deploy-lock=false they interleave.
func TestStackDeployLock(t *testing.T) {
	r := need(t)
	r.MustDocker("swarm", "init", "--advertise-addr", "127.0.0.1")
	t.Cleanup(func() {
		r.Docker("stack", "rm", "lockstack")
		r.Docker("swarm", "leave", "--force")
	})
	image := r.PushBusybox("lock-stack:1")
	stack := map[string]string{"docker-stack.yml": `version: '3.8'
services:
  web:
    image: ` + image + `
    command: ["sleep", "3600"]
    deploy:
      labels:
        lock.test/job: "${CI_JOB_ID}"
`}
	script := []string{
		"docker stack deploy --with-registry-auth -c docker-stack.yml lockstack",
		"sleep 8",
		`echo "READBACK $(docker service inspect lockstack_web --format '{{index .Spec.Labels "lock.test/job"}}')"`,
	}
	both := func(args []string) (a, b *runnerdriver.JobResult) {
		res := make([]*runnerdriver.JobResult, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			h := newLockHost(t, 73000, 973000+i, args...)
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i) * 3 * time.Second)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				vars := append(ferryVars(r, dockertest.UserOK),
					runnerdriver.Variable{Key: "CI_REGISTRY", Value: r.Registry},
					runnerdriver.Variable{Key: "REG_USER", Value: r.RegUser},
					runnerdriver.Variable{Key: "REG_PASSWORD", Value: r.RegPass, Masked: true})
				pr := h.d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-a/app", ProjectID: 101, Files: stack,
					Jobs: []runnerdriver.Job{{Name: "deploy", Stage: "deploy", Variables: vars,
						Script: append([]string{"docker login -u $REG_USER -p $REG_PASSWORD $CI_REGISTRY >/dev/null 2>&1"}, script...)}}})
				res[i] = pr.Jobs["deploy"]
			}()
		}
		wg.Wait()
		return res[0], res[1]
	}
	a, b := both(nil)
	mustNotInterleave(t, a, b)
	mustWaitBehind(t, b, a, "stack lockstack", 73000)
	a, b = both([]string{"--deploy-lock=false"})
	mustSucceed(t, a)
	mustSucceed(t, b)
	if ra, rb := readBack(t, a), readBack(t, b); ra == strconv.Itoa(a.ID) && rb == strconv.Itoa(b.ID) {
		t.Fatalf("control run without the lock did not interleave (read back %s, %s): the test cannot tell", ra, rb)
	}
}

// TestComposeV2DeployLock: the same with `docker compose` (v2, the
// plugin, a Go client): the deploy command is the plugin process (argv
// "docker-compose compose up ..."); each job finds its own container after
// its sleep, the waiter's line names the holder.
func TestComposeV2DeployLock(t *testing.T) {
	r := need(t)
	plugin := dockertest.ComposeV2(t)
	image := r.PushBusybox("lock-web:3")
	t.Cleanup(func() { r.Docker("rm", "-f", "lockapp2-web-1") })
	script := []string{
		"docker compose -p lockapp2 up -d --force-recreate > up.log 2>&1 || { cat up.log; exit 1; }",
		"sleep 8",
		`echo "READBACK $(docker inspect lockapp2-web-1 --format '{{index .Config.Labels "lock.test/job"}}')"`,
	}
	res := make([]*runnerdriver.JobResult, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		h := newLockHost(t, 74000, 974000+i)
		dockertest.InstallPlugin(t, filepath.Join(h.base, "home", ".docker"), plugin)
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 3 * time.Second)
			res[i] = h.run(r, image, runnerdriver.Job{Script: script})
		}()
	}
	wg.Wait()
	a, b := res[0], res[1]
	mustNotInterleave(t, a, b)
	mustWaitBehind(t, b, a, "compose project lockapp2", 74000)
}

// TestComposeLockThenGuard: an older pipeline's deploy that waited behind
// a newer one is judged by the deploy rules on what the engine has once
// it holds the lock: refused, the newer container stays.
func TestComposeLockThenGuard(t *testing.T) {
	r := need(t)
	image := r.PushBusybox("lock-web:4")
	t.Cleanup(func() { r.Docker("rm", "-f", "lockapp_web_1") })
	r.Docker("rm", "-f", "lockapp_web_1")
	// The older job has the lower id: a higher one would be a retry (a rollback).
	newer, older := newLockHost(t, 76000, 976000), newLockHost(t, 75000, 975000)
	var wg sync.WaitGroup
	var a, b *runnerdriver.JobResult
	wg.Add(2)
	go func() { defer wg.Done(); a = newer.run(r, image, runnerdriver.Job{Script: upThenReadBack(8)}) }()
	go func() {
		defer wg.Done()
		time.Sleep(3 * time.Second)
		b = older.run(r, image, runnerdriver.Job{Script: upThenReadBack(0)})
	}()
	wg.Wait()
	mustSucceed(t, a)
	if !strings.Contains(b.Log, "is held by team-a/app pipeline 76000 job 976000") {
		t.Fatalf("the older pipeline's job did not wait:\n%s", b.Log)
	}
	mustBeRefused(t, b, "ferry: compose project lockapp was deployed by pipeline 76000 of team-a/app (id 101), newer than this pipeline 75000: refusing to deploy an older pipeline over a newer one")
	if got := strings.TrimSpace(r.MustDocker("inspect", "lockapp_web_1", "--format", `{{index .Config.Labels "lock.test/job"}}`)); got != "976000" {
		t.Fatalf("the engine runs job %s's container, want the newer pipeline's 976000", got)
	}
}

// lockappJob prepares job id (a 60 s lease, no private /tmp: the script
// lives in the test's /tmp dir, which a private /tmp hides) with a script
// that changes compose project lockapp (a labelled network create, net)
// and so takes its lock; it returns the job, the script and the holder's
// pid.
func lockappJob(t *testing.T, e *env, r *dockertest.Remote, id, net string) (j *rawJob, script string, holder int) {
	t.Helper()
	j = newRawJob(t, e, r, id)
	j.args = append(j.args, "--private-tmp=off", "--deploy-lock-lease=60s")
	before := holders(e.base)
	if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
		t.Fatalf("prepare %s: %v\n%s", id, err, out)
	}
	for _, h := range waitHolders(t, e.base, len(before)+1) {
		if !slices.Contains(before, h) {
			holder, _ = strconv.Atoi(strings.Fields(h)[0])
		}
	}
	script = filepath.Join(e.base, "script-"+id)
	os.WriteFile(script, []byte("set -e\ndocker network create --label com.docker.compose.project=lockapp "+net+" >/dev/null\n"), 0o700)
	return j, script, holder
}

// removeLockapp removes, when the test ends, the networks lockappJob's
// scripts made and every lock lease container left on the engine.
func removeLockapp(t *testing.T, r *dockertest.Remote, nets []string) {
	t.Cleanup(func() {
		r.Docker(append([]string{"network", "rm"}, nets...)...)
		if ids := strings.Fields(r.MustDocker("ps", "-aq", "--filter", "label="+enginelock.LabelLease, "--filter", "name=ferry-lock-")); len(ids) > 0 {
			r.Docker(append([]string{"rm", "-f"}, ids...)...)
		}
	})
}

// TestLockReleasedShortlyAfterCleanup: cleanup does not wait for the
// engine. Job A takes the lock of compose project lockapp (a labelled
// network create: a change of the project) and ends; job B waits for the
// lock since before A's cleanup. A's cleanup signals its holder and returns;
// the holder releases on its own and exits, and B holds the lock and ends
// its deploy within releaseWithin of A's cleanup returning (the lease, 60 s,
// cannot be what freed it). Then job C holds the lock and the engine stops
// answering (dockerd SIGSTOPped): C's cleanup still returns at once (it
// used to wait for the release, up to 3 s, then the holder), and C's holder
// ends within its bound anyway.
func TestLockReleasedShortlyAfterCleanup(t *testing.T) {
	r := need(t)
	e := newEnv(t)
	const releaseWithin = 3 * time.Second
	nets := []string{"lockrel-a", "lockrel-b", "lockrel-c"}
	removeLockapp(t, r, nets)
	job := func(id, net string) (*rawJob, string, int) { return lockappJob(t, e, r, id, net) }
	holderGone := func(what string, pid int, from time.Time, within time.Duration) {
		t.Helper()
		for jobproc.Running(pid) {
			if time.Since(from) > within {
				t.Fatalf("%s: its holder still runs %s after cleanup started", what, within)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("%s: holder ended %s after cleanup started", what, time.Since(from).Round(time.Millisecond))
	}

	a, aScript, aHolder := job("7101", nets[0])
	if out, err := a.cmd("run", aScript, "step_script").CombinedOutput(); err != nil {
		t.Fatalf("A's deploy: %v\n%s", err, out)
	}
	if got := lockers(r); !strings.HasPrefix(got, "lock ") || strings.Contains(got, "ticket") {
		t.Fatalf("after A's deploy the engine has %q, want A's lock", got)
	}
	b, bScript, _ := job("7102", nets[1])
	bRun := b.cmd("run", bScript, "step_script")
	var bOut strings.Builder
	bRun.Stdout, bRun.Stderr = &bOut, &bOut
	if err := bRun.Start(); err != nil {
		t.Fatal(err)
	}
	bDone := make(chan error, 1)
	go func() { bDone <- bRun.Wait() }()
	waitFor(t, 30*time.Second, "job B queues", func() bool { return strings.Contains(lockers(r), "ticket ") })

	start := time.Now()
	if out, err := a.cmd("cleanup").CombinedOutput(); err != nil {
		t.Fatalf("A's cleanup: %v\n%s", err, out)
	}
	returned := time.Now()
	t.Logf("A's cleanup took %s", returned.Sub(start).Round(time.Millisecond))
	select {
	case err := <-bDone:
		if err != nil {
			t.Fatalf("B's deploy: %v\n%s", err, bOut.String())
		}
		t.Logf("B's deploy ended %s after A's cleanup returned", time.Since(returned).Round(time.Millisecond))
	case <-time.After(releaseWithin):
		t.Fatalf("B still waits %s after A's cleanup returned (engine: %q)", releaseWithin, lockers(r))
	}
	holderGone("A", aHolder, start, releaseWithin)
	if out, err := b.cmd("cleanup").CombinedOutput(); err != nil {
		t.Fatalf("B's cleanup: %v\n%s", err, out)
	}
	waitFor(t, releaseWithin, "B's lock released after its cleanup", func() bool { return lockers(r) == "" })

	// The engine stops answering while C holds the lock.
	c, cScript, cHolder := job("7103", nets[2])
	if out, err := c.cmd("run", cScript, "step_script").CombinedOutput(); err != nil {
		t.Fatalf("C's deploy: %v\n%s", err, out)
	}
	pb, err := os.ReadFile(filepath.Join(r.Dir, "dockerd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	dockerd, _ := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err := syscall.Kill(dockerd, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var contOnce sync.Once
	cont := func() { contOnce.Do(func() { syscall.Kill(dockerd, syscall.SIGCONT) }) }
	defer cont()
	start = time.Now()
	if out, err := c.cmd("cleanup").CombinedOutput(); err != nil {
		t.Fatalf("C's cleanup: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("C's cleanup took %s with the engine not answering: it waited for the release", d)
	} else {
		t.Logf("C's cleanup took %s with the engine not answering", d.Round(time.Millisecond))
	}
	// shutdownBudget (5 s) plus a margin for a loaded machine.
	holderGone("C, the engine not answering", cHolder, start, 7*time.Second)
	cont()
}

// TestLockReleasedAfterCleanupEnds: told to stop by cleanup's signal, the
// holder releases the job's lock once cleanup is over (it removes the job
// state dir last), not while cleanup still runs, so that the release does
// not compete with cleanup for the host's CPU; and within its bound if
// cleanup never gets there.
func TestLockReleasedAfterCleanupEnds(t *testing.T) {
	r := need(t)
	e := newEnv(t)
	nets := []string{"lockend-a", "lockend-b"}
	removeLockapp(t, r, nets)
	// deploy runs a job that takes the lock of compose project lockapp
	// and returns it with its holder's pid.
	deploy := func(id, net string) (*rawJob, int) {
		j, script, pid := lockappJob(t, e, r, id, net)
		if out, err := j.cmd("run", script, "step_script").CombinedOutput(); err != nil {
			t.Fatalf("%s's deploy: %v\n%s", id, err, out)
		}
		if got := lockers(r); !strings.HasPrefix(got, "lock ") {
			t.Fatalf("after %s's deploy the engine has %q, want its lock", id, got)
		}
		return j, pid
	}
	stillHeld := func(what string, sent time.Time) {
		t.Helper()
		time.Sleep(150*time.Millisecond - time.Since(sent))
		if got := lockers(r); !strings.HasPrefix(got, "lock ") {
			t.Fatalf("%s: the lock was released within %s of the signal, while the job's cleanup was not over (engine: %q)",
				what, time.Since(sent).Round(time.Millisecond), got)
		}
	}

	// The signal alone: the job state dir stays.
	a, aHolder := deploy("7201", nets[0])
	sent := time.Now()
	if err := syscall.Kill(aHolder, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stillHeld("signal, no cleanup", sent)
	waitFor(t, 3*time.Second, "the lock released within the holder's bound when cleanup never ends", func() bool { return lockers(r) == "" })
	t.Logf("signal, no cleanup: the lock released %s after the signal", time.Since(sent).Round(time.Millisecond))
	if out, err := a.cmd("cleanup").CombinedOutput(); err != nil {
		t.Fatalf("A's cleanup: %v\n%s", err, out)
	}

	// The signal, then cleanup, which ends by removing the job state dir.
	b, bHolder := deploy("7202", nets[1])
	sent = time.Now()
	if err := syscall.Kill(bHolder, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stillHeld("signal, then cleanup", sent)
	if out, err := b.cmd("cleanup").CombinedOutput(); err != nil {
		t.Fatalf("B's cleanup: %v\n%s", err, out)
	}
	returned := time.Now()
	waitFor(t, 2*time.Second, "the lock released soon after cleanup returned", func() bool { return lockers(r) == "" })
	t.Logf("signal, then cleanup: the lock released %s after cleanup returned", time.Since(returned).Round(time.Millisecond))
}
