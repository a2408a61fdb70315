package stages_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/asuser"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// attackDriver is a runner as an unprivileged user (asuser) would run it:
// ferry from env.Files["ferry"], everything under the user's own temp dir.
func attackDriver(t *testing.T, env asuser.Env, extra ...string) (*runnerdriver.Driver, string) {
	t.Helper()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	d, err := runnerdriver.New(runnerdriver.Config{
		FerryBinary: env.Files["ferry"],
		BaseDir:     base,
		// --sandbox=false: the sandbox alone keeps a job out of the store
		// (TestIsolationAttacks); the MAC must hold without it (old
		// kernels, sandbox off), which is what this attacker tests.
		ExtraArgs:         append([]string{"--state-dir=" + state, "--kube-sources=none", "--kubectl-shim=false", "--sandbox=false"}, extra...),
		PrepareRetryDelay: 50 * time.Millisecond,
		PrepareAttempts:   1,
		Env:               []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base, "LANG=C.UTF-8"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d, state
}

// dotenvAttacks are scripts of a job of another project on the same host
// that runs between the producer (kaniko) and the consumer (kube) and
// rewrites kaniko's stored report in the dir store. $REPLAY_ID is the id of
// a genuine "kaniko" job of the attacker's own project whose report says
// IMAGE=evil.
var dotenvAttacks = map[string]string{
	// The stored JSON edited in place.
	"altered": `f=$(ls -t "$FERRY_STATE_DIR"/dotenv/*/*.json | grep -v "/$REPLAY_ID.json" | head -1)
sed -i 's|registry.example.com/good|registry.example.com/evil|' "$f"
grep -c evil "$f"`,
	// A report written from scratch with a made-up MAC.
	"forged": `f=$(ls -t "$FERRY_STATE_DIR"/dotenv/*/*.json | grep -v "/$REPLAY_ID.json" | head -1)
id=$(basename "$f" .json)
mac=$(echo forged | sha256sum | cut -c1-64)
printf '{"version":2,"server_url":"https://gitlab.example.com","project_id":42,"pipeline_id":1,"job_id":%s,"job_name":"kaniko","files":["docker.env"],"vars":[{"key":"IMAGE","value":"registry.example.com/evil:1"}],"created":"2026-01-01T00:00:00Z","mac":"%s"}' "$id" "$mac" > "$f"`,
	// A genuine report of another pipeline's "kaniko" (sealed by ferry
	// with that job's token) copied over this one, its job id changed to fit.
	"replayed": `f=$(ls -t "$FERRY_STATE_DIR"/dotenv/*/*.json | grep -v "/$REPLAY_ID.json" | head -1)
id=$(basename "$f" .json)
sed "s|\"job_id\":$REPLAY_ID,|\"job_id\":$id,|" "$(dirname "$f")/$REPLAY_ID.json" > "$f"
grep -c evil "$f"`,
	// The same copy, untouched.
	"replayed-as-is": `f=$(ls -t "$FERRY_STATE_DIR"/dotenv/*/*.json | grep -v "/$REPLAY_ID.json" | head -1)
cp "$(dirname "$f")/$REPLAY_ID.json" "$f"`,
}

func dotenvAttackPipeline(attack string, replayID int) runnerdriver.Pipeline {
	return runnerdriver.Pipeline{
		Stages: []string{"image", "attack", "deploy"},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image",
				Script:    []string{`echo "IMAGE=registry.example.com/good:$CI_COMMIT_SHORT_SHA" > docker.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}},
			{Name: "attacker", Stage: "attack",
				Variables: []runnerdriver.Variable{{Key: "REPLAY_ID", Value: itoa(replayID), Public: true}},
				Script:    []string{attack}},
			{Name: "kube", Stage: "deploy", Needs: []runnerdriver.Need{{Job: "kaniko"}},
				Script: []string{`echo "image=[${IMAGE-unset}]"`}},
		},
	}
}

// TestAttackDotenvStoreTampered: a job of another project rewrites, forges
// or replays the stored dotenv report of kaniko before kube (which needs
// kaniko) starts. kube must not get the attacker's IMAGE: one line names
// kaniko's report as refused and the job goes on without its variables;
// with --dotenv-strict it fails instead. Run as an unprivileged user.
func TestAttackDotenvStoreTampered(t *testing.T) {
	asuser.Run(t, asuser.Spec{User: "ferry-ident-1", Files: map[string]string{"ferry": ferryBin}}, func(t *testing.T, env asuser.Env) {
		if env.Uid == 0 {
			t.Fatal("running as root")
		}
		for _, strict := range []bool{false, true} {
			d, _ := attackDriver(t, env, "--dotenv-strict="+map[bool]string{false: "false", true: "true"}[strict])
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			// The attacker's own project has a "kaniko" job too, whose
			// genuine report says IMAGE=evil.
			p0 := d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "evil/project", ProjectID: 666, Jobs: []runnerdriver.Job{{Name: "kaniko",
				Script:    []string{`echo "IMAGE=registry.example.com/evil:1" > docker.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}}}})
			wantStatus(t, p0, "kaniko", runnerdriver.StatusSuccess)
			replayID := p0.Jobs["kaniko"].ID

			if !strict {
				// The control: nobody tampers, kube gets kaniko's IMAGE.
				pr := d.RunPipeline(ctx, dotenvAttackPipeline("true", replayID))
				wantStatus(t, pr, "kube", runnerdriver.StatusSuccess)
				if l := jobLog(pr, "kube"); !strings.Contains(l, "image=[registry.example.com/good:") {
					t.Fatalf("control: kube did not get IMAGE:\n%s", l)
				}
			}
			for name, attack := range dotenvAttacks {
				if strict && name != "replayed" {
					continue // strict mode changes the outcome, not the check: one attack shows it
				}
				pr := d.RunPipeline(ctx, dotenvAttackPipeline(attack, replayID))
				wantStatus(t, pr, "attacker", runnerdriver.StatusSuccess)
				kaniko := pr.Jobs["kaniko"].ID
				l := jobLog(pr, "kube")
				if strings.Contains(l, "evil") {
					t.Errorf("%s (strict %v): the attacker's value reached the consumer:\n%s", name, strict, l)
				}
				refused := "the stored report of job " + itoa(kaniko) + " (kaniko) is refused"
				if n := strings.Count(l, refused); n != 1 {
					t.Errorf("%s (strict %v): %d lines %q, want 1:\n%s", name, strict, n, refused, l)
				}
				r := pr.Jobs["kube"]
				if strict {
					if r.Status != runnerdriver.StatusFailed || r.FailureReason != runnerdriver.ReasonSystemFailure || !strings.Contains(l, "--dotenv-strict") {
						t.Errorf("%s strict: kube %s %s, want a system failure naming --dotenv-strict:\n%s", name, r.Status, r.FailureReason, l)
					}
					if strings.Contains(l, "image=[") {
						t.Errorf("%s strict: the script ran:\n%s", name, l)
					}
				} else {
					if r.Status != runnerdriver.StatusSuccess || !strings.Contains(l, "image=[unset]") {
						t.Errorf("%s: kube %s, want success without IMAGE:\n%s", name, r.Status, l)
					}
				}
			}
			cancel()
		}
	})
}
