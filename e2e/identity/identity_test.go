package identity_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/asuser"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

const runnerUser = "ferry-ident-1"

// spec builds ferry (engine embedded, as shipped) and mints credentials
// for project A's namespace, handed to the test body running as the
// runner user.
func spec(t *testing.T) asuser.Spec {
	t.Helper()
	if asuser.IsChild() {
		// The body's files and values come from the parent; the child has
		// no cluster and must not build ferry.
		return asuser.Spec{User: runnerUser}
	}
	bin, err := ferrybuild.Shared()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := c.ServiceAccountCredentials(ctx, "project-a", "deployer", "admin")
	if err != nil {
		t.Fatal(err)
	}
	return asuser.Spec{User: runnerUser, Files: map[string]string{"ferry": bin},
		Values: map[string]string{"A_KUBECONFIG": a.KubeconfigBase64, "A_TOKEN": a.Token}}
}

func newDriver(t *testing.T, env asuser.Env) (*runnerdriver.Driver, string) {
	t.Helper()
	if env.Uid == 0 {
		t.Fatal("the body runs as root: file permissions would prove nothing")
	}
	base := t.TempDir()
	state := filepath.Join(base, "state")
	d, err := runnerdriver.New(runnerdriver.Config{
		FerryBinary: env.Files["ferry"],
		BaseDir:     filepath.Join(base, "runner"),
		// --sandbox=false: these attacks test identity and the state-dir
		// chain checks, which must hold without the sandbox (it would stop
		// the attacker's writes first; stages' TestIsolationAttacks covers it).
		ExtraArgs:         []string{"--state-dir=" + state, "--grace-period=2s", "--sandbox=false"},
		PrepareAttempts:   1,
		PrepareRetryDelay: 50 * time.Millisecond,
		Env:               []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base, "LANG=C.UTF-8"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d, state
}

func waitFile(p string, d time.Duration) ([]byte, bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
			return b, true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, false
}

// TestAttackClaimsAnotherJobsID: while project A's deploy job runs with its
// kubeconfig and a background process, a job of project B sets
// `variables: {CI_JOB_ID: <A's id>}`. B must not get A's kubeconfig (nor
// reach A's namespace), and B's cleanup must neither kill A's processes nor
// delete A's state: A finishes with all of them intact.
func TestAttackClaimsAnotherJobsID(t *testing.T) {
	asuser.Run(t, spec(t), func(t *testing.T, env asuser.Env) {
		d, state := newDriver(t, env)
		sync := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()

		jobA := runnerdriver.Job{Name: "deploy", Stage: "deploy",
			Variables: []runnerdriver.Variable{
				{Key: "KUBECONFIG", Value: env.Values["A_KUBECONFIG"], Masked: true},
				{Key: "SYNC", Value: sync, Public: true},
			},
			Script: []string{
				`sleep 3001 >/dev/null 2>&1 & echo $! > "$SYNC/a-bg.pid"`,
				`echo "$CI_JOB_ID" > "$SYNC/a-id.tmp" && mv "$SYNC/a-id.tmp" "$SYNC/a-id"`,
				`for i in $(seq 1 2400); do [ -e "$SYNC/b-done" ] && break; sleep 0.1; done`,
				`test -e "$SYNC/b-done"`,
				`kill -0 "$(cat "$SYNC/a-bg.pid")" && echo "A-BG-ALIVE-$((6*7))"`,
				`test -s "$KUBECONFIG" && echo "A-KUBECONFIG-PRESENT-$((6*7))"`,
				`kubectl get configmaps -n project-a >/dev/null && echo "A-KUBECTL-OK-$((6*7))"`,
			}}
		resA := make(chan *runnerdriver.PipelineResult, 1)
		go func() {
			resA <- d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-a/shark-app", ProjectID: 101, Jobs: []runnerdriver.Job{jobA}})
		}()
		idA, ok := waitFile(filepath.Join(sync, "a-id"), 4*time.Minute)
		if !ok {
			cancel()
			pr := <-resA
			t.Fatalf("job A never got to its script:\n%s", runnerdriver.StripANSI(pr.Jobs["deploy"].Log))
		}
		aID := strings.TrimSpace(string(idA))
		aDirs, _ := filepath.Glob(filepath.Join(state, "jobs", "*-"+aID))
		if len(aDirs) != 1 {
			t.Fatalf("A's state dir: %v", aDirs)
		}

		// Project B's job, on the same runner while A runs.
		jobB := runnerdriver.Job{Name: "steal", Stage: "test",
			Variables: []runnerdriver.Variable{
				{Key: "CI_JOB_ID", Value: aID, Public: true},
				{Key: "A_TOKEN", Value: env.Values["A_TOKEN"], Masked: true},
			},
			Script: []string{
				`echo "b sees KUBECONFIG=[${KUBECONFIG-}]"`,
				`if [ -n "${KUBECONFIG-}" ] && grep -qF "$A_TOKEN" "$KUBECONFIG" 2>/dev/null; then echo "B-GOT-A-KUBECONFIG-$((6*7))"; fi`,
				`if kubectl get configmaps -n project-a >/dev/null 2>&1; then echo "B-REACHED-PROJECT-A-$((6*7))"; fi`,
			}}
		prB := d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-b/other", ProjectID: 202, Jobs: []runnerdriver.Job{jobB}})
		logB := runnerdriver.StripANSI(prB.Jobs["steal"].Log)
		if err := os.WriteFile(filepath.Join(sync, "b-done"), []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
		prA := <-resA
		logA := runnerdriver.StripANSI(prA.Jobs["deploy"].Log)

		if prB.Jobs["steal"].Status != runnerdriver.StatusSuccess {
			t.Errorf("job B: %s %s\n%s", prB.Jobs["steal"].Status, prB.Jobs["steal"].Error, logB)
		}
		// Markers are computed by the shell ($((6*7))): the runner echoes
		// every command line into the log, so a literal marker would be
		// found there whether or not the command printed it.
		for _, bad := range []string{"B-GOT-A-KUBECONFIG-42", "B-REACHED-PROJECT-A-42", aDirs[0]} {
			if strings.Contains(logB, bad) {
				t.Errorf("job B: %q in its log: the attack worked\n%s", bad, logB)
			}
		}
		warn := fmt.Sprintf("job variables CI_JOB_ID=%q (payload: %d) disagree with the runner's job payload", aID, prB.Jobs["steal"].ID)
		if n := strings.Count(logB, warn); n != 1 {
			t.Errorf("job B's log says %d times %q, want once:\n%s", n, warn, logB)
		}
		if prA.Jobs["deploy"].Status != runnerdriver.StatusSuccess {
			t.Errorf("job A: %s %s\n%s", prA.Jobs["deploy"].Status, prA.Jobs["deploy"].Error, logA)
		}
		for _, want := range []string{"A-BG-ALIVE-42", "A-KUBECONFIG-PRESENT-42", "A-KUBECTL-OK-42"} {
			if !strings.Contains(logA, want) {
				t.Errorf("job A's log lacks %s: B's job or cleanup reached A\n%s", want, logA)
			}
		}
	})
}

// TestAttackSymlinkedJobsDir: a job replaces <state>/jobs with a symlink
// into a directory it controls. A later job with a kubeconfig must not have
// it written there: its prepare fails with one line naming the symlink (a
// system failure), and the attacker's directory stays empty.
func TestAttackSymlinkedJobsDir(t *testing.T) {
	asuser.Run(t, spec(t), func(t *testing.T, env asuser.Env) {
		d, state := newDriver(t, env)
		loot := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()

		attacker := runnerdriver.Job{Name: "plant",
			Variables: []runnerdriver.Variable{{Key: "LOOT", Value: loot, Public: true}},
			Script: []string{
				`mv "$FERRY_STATE_DIR/jobs" "$FERRY_STATE_DIR/jobs.moved"`,
				`ln -s "$LOOT" "$FERRY_STATE_DIR/jobs"`,
				`echo ATTACK-PLANTED`,
			}}
		pr := d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "evil/planter", ProjectID: 666, Jobs: []runnerdriver.Job{attacker}})
		if l := runnerdriver.StripANSI(pr.Jobs["plant"].Log); !strings.Contains(l, "ATTACK-PLANTED") {
			t.Fatalf("the attack did not run:\n%s", l)
		}
		if fi, err := os.Lstat(filepath.Join(state, "jobs")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("<state>/jobs is not the attacker's symlink: %v %v", fi, err)
		}

		victim := runnerdriver.Job{Name: "deploy",
			Variables: []runnerdriver.Variable{{Key: "KUBECONFIG", Value: env.Values["A_KUBECONFIG"], Masked: true}},
			Script:    []string{`echo VICTIM-SCRIPT-RAN`}}
		pr = d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-a/shark-app", ProjectID: 101, Jobs: []runnerdriver.Job{victim}})
		r := pr.Jobs["deploy"]
		l := runnerdriver.StripANSI(r.Log)
		if r.Status != runnerdriver.StatusFailed || r.FailureReason != runnerdriver.ReasonSystemFailure {
			t.Errorf("victim: %s %s, want a system failure\n%s", r.Status, r.FailureReason, l)
		}
		want := "ferry: state dir " + filepath.Join(state, "jobs") + " is a symlink"
		if n := strings.Count(l, want); n < 1 {
			t.Errorf("victim's log does not say %q:\n%s", want, l)
		}
		if strings.Contains(l, "VICTIM-SCRIPT-RAN") {
			t.Errorf("the victim's script ran over a redirected state dir:\n%s", l)
		}
		var found []string
		filepath.Walk(loot, func(p string, fi os.FileInfo, err error) error {
			if err == nil && p != loot {
				found = append(found, p)
			}
			return nil
		})
		if len(found) > 0 {
			t.Errorf("files written through the symlink into the attacker's dir: %v", found)
		}
	})
}
