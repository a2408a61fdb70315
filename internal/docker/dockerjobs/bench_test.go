package dockerjobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/benchstat"
	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/pkg/docker/enginelock"
)

// BenchmarkComposeV1 is seed 000's `docker-compose pull && docker-compose
// up -d` (compose v1) side by side: through ferry's socket (a `ferry run`
// stage of a prepared job, as a job runs it) and through the docker CLI's
// own ssh:// (compose shells out to ssh for every connection). make bench
// prints the ratio (scripts/bench.sh).
func BenchmarkComposeV1(b *testing.B) {
	r := need(b)
	image := r.PushBusybox("bench:1")
	dir := b.TempDir()
	proj := filepath.Join(dir, "proj")
	os.MkdirAll(proj, 0o755)
	os.WriteFile(filepath.Join(proj, "docker-compose.yml"), []byte("version: '3.8'\nservices:\n  web:\n    image: "+image+"\n    command: [\"sleep\", \"3600\"]\n"), 0o644)
	b.Cleanup(func() { r.Docker("rm", "-f", "bench-web-1", "bench_web_1") })
	compose := "cd " + proj + " && docker-compose -p bench pull -q && docker-compose -p bench up -d"

	b.Run("ferry", func(b *testing.B) {
		// Log in once, as the seed's before_script does.
		benchThroughFerry(b, r, "9001", nil, "docker login -u "+r.RegUser+" --password-stdin "+r.Registry+" <<< '"+r.RegPass+"' >/dev/null", compose)
	})
	// The floor: compose straight on the daemon's socket, no SSH at all.
	b.Run("floor", func(b *testing.B) {
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.TempDir(), "DOCKER_HOST=unix://" + r.DockerSock,
			"DOCKER_CONFIG=" + filepath.Join(r.Dir, "admin-docker")}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c := exec.Command("bash", "-c", "set -e\n"+compose+" 2>/dev/null")
			c.Env = env
			if out, err := c.CombinedOutput(); err != nil {
				b.Fatalf("%v\n%s", err, out)
			}
		}
	})
	b.Run("ssh", func(b *testing.B) {
		env := sshClientEnv(b, r, b.TempDir())
		login := exec.Command("bash", "-c", "docker login -u "+r.RegUser+" --password-stdin "+r.Registry+" <<< '"+r.RegPass+"' >/dev/null")
		login.Env = env
		if out, err := login.CombinedOutput(); err != nil {
			b.Fatalf("login: %v\n%s", err, out)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c := exec.Command("bash", "-c", "set -e\n"+compose+" 2>/dev/null")
			c.Env = env
			if out, err := c.CombinedOutput(); err != nil {
				b.Fatalf("%v\n%s", err, out)
			}
		}
	})
}

// BenchmarkComposeV2 is seed 000's `docker compose pull && docker compose
// up -d` (the v2 plugin, installed in each side's DOCKER_CONFIG) side by
// side: through ferry's socket (a `ferry run` stage of a prepared job),
// through the docker CLI's own ssh:// (ssh processes for the plugin's
// connections), and the floor (the daemon's socket, no SSH). Goal: ferry no
// slower than ssh://.
func BenchmarkComposeV2(b *testing.B) {
	r := need(b)
	plugin := dockertest.ComposeV2(b)
	image := r.PushBusybox("bench2:1")
	dir := b.TempDir()
	proj := filepath.Join(dir, "proj")
	os.MkdirAll(proj, 0o755)
	os.WriteFile(filepath.Join(proj, "compose.yml"), []byte("services:\n  web:\n    image: "+image+"\n    command: [\"sleep\", \"3600\"]\n"), 0o644)
	b.Cleanup(func() { r.Docker("rm", "-f", "bench2-web-1") })
	compose := "cd " + proj + " && docker compose -p bench2 pull -q && docker compose -p bench2 up -d"
	login := "docker login -u " + r.RegUser + " --password-stdin " + r.Registry + " <<< '" + r.RegPass + "' >/dev/null"
	bash := func(b *testing.B, env []string, script string) {
		c := exec.Command("bash", "-c", "set -e\n"+script)
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
	}

	b.Run("ferry", func(b *testing.B) {
		benchThroughFerry(b, r, "9002", func(home string) {
			dockertest.InstallPlugin(b, filepath.Join(home, ".docker"), plugin)
		}, login, compose)
	})
	b.Run("floor", func(b *testing.B) {
		cfg := b.TempDir()
		dockertest.InstallPlugin(b, cfg, plugin)
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.TempDir(), "DOCKER_HOST=unix://" + r.DockerSock, "DOCKER_CONFIG=" + cfg}
		bash(b, env, login)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			bash(b, env, compose+" 2>/dev/null")
		}
	})
	b.Run("ssh", func(b *testing.B) {
		d := b.TempDir()
		env := sshClientEnv(b, r, d)
		dockertest.InstallPlugin(b, filepath.Join(d, "docker-config"), plugin)
		bash(b, env, login)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			bash(b, env, compose+" 2>/dev/null")
		}
	})
}

// benchThroughFerry times compose as a job runs it: `ferry run` stages of a
// job prepared once (id), after one stage that runs login. setupHome, if
// set, prepares the runner user's home first.
func benchThroughFerry(b *testing.B, r *dockertest.Remote, id string, setupHome func(home string), login, compose string) {
	e := &env{base: b.TempDir()}
	e.home, e.state = filepath.Join(e.base, "home"), filepath.Join(e.base, "state")
	os.MkdirAll(e.home, 0o700)
	if setupHome != nil {
		setupHome(e.home)
	}
	j := newRawJob(nil, e, r, id)
	if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
		b.Fatalf("prepare: %v\n%s", err, out)
	}
	defer j.cmd("cleanup").Run()
	script := filepath.Join(e.base, "script")
	os.WriteFile(script, []byte(login+"\n"), 0o700)
	if out, err := j.cmd("run", script, "step_script").CombinedOutput(); err != nil {
		b.Fatalf("login: %v\n%s", err, out)
	}
	os.WriteFile(script, []byte("set -e\n"+compose+" 2>/dev/null\n"), 0o700)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, err := j.cmd("run", script, "step_script").CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
	}
}

// BenchmarkComposeV1Lock is what the deploy lock adds to a seed-000-style
// job (`docker-compose pull -q && docker-compose up -d` of a free compose
// project), side by side with --deploy-lock=false: each iteration runs one
// whole job each way (prepare, the deploy stage, cleanup: the lock is held
// until cleanup, so later stages of a job pay nothing) and reports the
// medians of the deploy stage and of cleanup each way, of the paired
// differences, and lock-gone-ms: how long after cleanup returned the lock
// was gone from the engine (cleanup signals the holder, which releases on
// its own: not on the job's path, but what a waiting job waits for).
// The lease image is loaded before the timing (once per engine).
func BenchmarkComposeV1Lock(b *testing.B) {
	r := need(b)
	image := r.PushBusybox("benchlock:1")
	dir := b.TempDir()
	proj := filepath.Join(dir, "proj")
	os.MkdirAll(proj, 0o755)
	os.WriteFile(filepath.Join(proj, "docker-compose.yml"), []byte("version: '3.8'\nservices:\n  web:\n    image: "+image+"\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n"), 0o644)
	b.Cleanup(func() { r.Docker("rm", "-f", "benchlock_web_1") })
	login := "docker login -u " + r.RegUser + " --password-stdin " + r.Registry + " <<< '" + r.RegPass + "' >/dev/null"
	deploy := "cd " + proj + " && docker-compose -p benchlock pull -q && docker-compose -p benchlock up -d 2>/dev/null"
	e := &env{base: b.TempDir()}
	e.home, e.state = filepath.Join(e.base, "home"), filepath.Join(e.base, "state")
	os.MkdirAll(e.home, 0o700)
	script := filepath.Join(e.base, "script")
	var takes, gone []time.Duration
	lockName := enginelock.Target{Kind: "compose project", Name: "benchlock"}.LockName()
	eng := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", r.DockerSock)
	}}}
	// lockThere asks the engine (its own socket) whether the lock's name
	// is taken.
	lockThere := func() bool {
		resp, err := eng.Get("http://docker/containers/json?all=1&filters=" + url.QueryEscape(`{"name":["^/`+lockName+`$"]}`))
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var cs []json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&cs); err != nil {
			b.Fatal(err)
		}
		return len(cs) > 0
	}
	job := func(id int, lock bool) (stage, cleanup time.Duration) {
		j := newRawJob(nil, e, r, strconv.Itoa(id))
		// The script lives in the bench's /tmp dir, which a private /tmp hides.
		j.args = append(j.args, "--private-tmp=off")
		if !lock {
			j.args = append(j.args, "--deploy-lock=false")
		}
		if out, err := j.cmd("prepare").CombinedOutput(); err != nil {
			b.Fatalf("prepare: %v\n%s", err, out)
		}
		os.WriteFile(script, []byte(login+"\n"), 0o700)
		if out, err := j.cmd("run", script, "step_script").CombinedOutput(); err != nil {
			b.Fatalf("login: %v\n%s", err, out)
		}
		os.WriteFile(script, []byte("set -e\n"+deploy+"\n"), 0o700)
		t0 := time.Now()
		if out, err := bounded(j.cmd("run", script, "step_script"), 2*time.Minute); err != nil {
			b.Fatalf("deploy: %v\n%s", err, out)
		}
		if lock {
			// The deploy request's wait for the take as the holder timed
			// it, in the job's own path (over its SSH connection; the take
			// starts at the command's handshake, TakeEarly): the one
			// number here free of the machine's noise.
			filepath.Walk(e.state, func(p string, fi os.FileInfo, err error) error {
				if err != nil || fi.Name() != "holder.log" {
					return nil
				}
				b, _ := os.ReadFile(p)
				for _, m := range reHeldAfter.FindAllStringSubmatch(string(b), -1) {
					if d, err := time.ParseDuration(m[1]); err == nil {
						takes = append(takes, d)
					}
				}
				return nil
			})
		}
		if lock && !lockThere() {
			b.Fatal("the deploy did not take the lock")
		}
		t1 := time.Now()
		if out, err := j.cmd("cleanup").CombinedOutput(); err != nil {
			b.Fatalf("cleanup: %v\n%s", err, out)
		}
		t2 := time.Now()
		for lock && lockThere() {
			if time.Since(t2) > 10*time.Second {
				b.Fatal("the lock is still there 10 s after cleanup")
			}
			time.Sleep(time.Millisecond)
		}
		if lock {
			gone = append(gone, time.Since(t2))
		}
		return t1.Sub(t0), t2.Sub(t1)
	}
	job(9300, true) // loads the lease image, warms the engine
	takes, gone = nil, nil
	var on, off, cOn, cOff, dDeploy, dCleanup []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate which goes first: the machine's drift cancels out.
		first := i%2 == 0
		s1, c1 := job(9310+2*i, first)
		s2, c2 := job(9311+2*i, !first)
		if !first {
			s1, s2, c1, c2 = s2, s1, c2, c1
		}
		on, off = append(on, s1), append(off, s2)
		cOn, cOff = append(cOn, c1), append(cOff, c2)
		dDeploy, dCleanup = append(dDeploy, s1-s2), append(dCleanup, c1-c2)
	}
	// Medians: on a shared machine one slow job skews a mean by seconds.
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	b.ReportMetric(median(off), "deploy-off-ms")
	b.ReportMetric(median(on), "deploy-on-ms")
	// The paired differences with their medians' 95% confidence intervals.
	ci := func(name string, ds []time.Duration) {
		ms := make([]float64, len(ds))
		for i, d := range ds {
			ms[i] = float64(d.Microseconds()) / 1000
		}
		med, lo, hi := benchstat.MedianCI(ms)
		b.ReportMetric(med, "added-"+name+"-ms")
		b.ReportMetric(lo, "added-"+name+"-lo-ms")
		b.ReportMetric(hi, "added-"+name+"-hi-ms")
	}
	ci("deploy", dDeploy)
	b.ReportMetric(median(cOff), "cleanup-off-ms")
	b.ReportMetric(median(cOn), "cleanup-on-ms")
	ci("cleanup", dCleanup)
	b.ReportMetric(median(gone), "lock-gone-ms")
	if len(takes) > 0 {
		b.ReportMetric(median(takes), "take-in-job-ms")
	}
}

// bounded runs c and kills it after d: a deploy that hangs (a lock that
// never comes) fails the benchmark instead of stopping it.
func bounded(c *exec.Cmd, d time.Duration) ([]byte, error) {
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		return nil, err
	}
	t := time.AfterFunc(d, func() { c.Process.Kill() })
	defer t.Stop()
	err := c.Wait()
	return out.Bytes(), err
}

var reHeldAfter = regexp.MustCompile(`deploy lock: .* held for .* after (\S+)`)
