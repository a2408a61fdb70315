package stages_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// dotenvDriver runs pipelines through the real ferry binary the way
// gitlab-runner does, with GitLab's own dotenv feature OFF (ferry carries
// the reports) unless mod turns it on.
func dotenvDriver(t *testing.T, extra []string, mod func(*runnerdriver.Config)) (*runnerdriver.Driver, string) {
	t.Helper()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	cfg := runnerdriver.Config{
		FerryBinary:       ferryBin,
		BaseDir:           base,
		ExtraArgs:         append([]string{"--state-dir=" + state, "--kube-sources=none"}, extra...),
		PrepareRetryDelay: 50 * time.Millisecond,
		PrepareAttempts:   1,
		Env:               []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base, "LANG=C.UTF-8"},
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := runnerdriver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d, state
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func jobLog(pr *runnerdriver.PipelineResult, name string) string {
	if r := pr.Jobs[name]; r != nil {
		return runnerdriver.StripANSI(r.Log)
	}
	return ""
}

func wantStatus(t *testing.T, pr *runnerdriver.PipelineResult, name, status string) {
	t.Helper()
	r := pr.Jobs[name]
	if r == nil || r.Status != status {
		got := "missing"
		if r != nil {
			got = r.Status + " " + r.FailureReason + " " + r.Error
		}
		t.Fatalf("job %s: %s, want %s\nlog:\n%s", name, got, status, jobLog(pr, name))
	}
}

// TestDotenvSeed000 is the seed pipeline: kaniko writes IMAGE=... to
// docker.env (a dotenv report), the kube job needs kaniko and uses $IMAGE.
func TestDotenvSeed000(t *testing.T) {
	d, state := dotenvDriver(t, nil, nil)
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Stages: []string{"image", "deploy"},
		Files:  map[string]string{"deployment.yml": "image: IMAGE\n"},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image",
				Script:    []string{`echo "IMAGE=registry.example.com/group/shark-app:$CI_COMMIT_SHORT_SHA" > docker.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}},
			{Name: "kube", Stage: "deploy", Needs: []runnerdriver.Need{{Job: "kaniko"}},
				Script: []string{`echo "image=$IMAGE"`, `sed -i -e "s|IMAGE|${IMAGE}|g" deployment.yml`, `cat deployment.yml`}},
		},
	})
	wantStatus(t, pr, "kaniko", runnerdriver.StatusSuccess)
	wantStatus(t, pr, "kube", runnerdriver.StatusSuccess)
	klog, log := jobLog(pr, "kaniko"), jobLog(pr, "kube")
	if !strings.Contains(klog, "dotenv: stored 1 variable (IMAGE) from docker.env for later jobs, expires in 720h0m0s") {
		t.Errorf("kaniko log:\n%s", klog)
	}
	if !strings.Contains(log, "dotenv: IMAGE from kaniko") {
		t.Errorf("kube log lacks the dotenv line:\n%s", log)
	}
	if !strings.Contains(log, "image=registry.example.com/group/shark-app:") || !strings.Contains(log, "image: registry.example.com/group/shark-app:") {
		t.Errorf("kube did not get IMAGE:\n%s", log)
	}
	// The log names, never shows, the value at prepare.
	prep := log[:strings.Index(log, "dotenv: IMAGE from kaniko")+60]
	if strings.Contains(prep, "registry.example.com/group/shark-app") {
		t.Errorf("prepare printed the value:\n%s", prep)
	}
	files, _ := filepath.Glob(filepath.Join(state, "dotenv", "*", "*.json"))
	if len(files) != 1 {
		t.Fatalf("store files: %v", files)
	}
	if info, _ := os.Stat(files[0]); info.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %v", info.Mode().Perm())
	}
}

// TestDotenvSeveralProducers: two producers; a consumer that needs only one
// gets only its variables; a later-stage job without needs gets both, in
// dependencies[] order (the later one wins a shared key, with a warning).
func TestDotenvSeveralProducers(t *testing.T) {
	d, _ := dotenvDriver(t, nil, nil)
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Stages: []string{"build", "test", "deploy"},
		Jobs: []runnerdriver.Job{
			{Name: "a", Stage: "build", Script: []string{`printf 'A=from a\nSHARED=a\n' > a.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("a.env")}},
			{Name: "b", Stage: "build", Script: []string{`printf 'B=x=y "q"\nSHARED=b\nU=h\xc3\xa9\n' > b.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("b.env")}},
			{Name: "only-b", Stage: "test", Needs: []runnerdriver.Need{{Job: "b"}},
				Script: []string{`echo "A=[${A-unset}] B=[$B] SHARED=[$SHARED] U=[$U]"`}},
			{Name: "all", Stage: "deploy",
				Script: []string{`echo "A=[$A] B=[$B] SHARED=[$SHARED]"`}},
			{Name: "none", Stage: "deploy", Dependencies: []string{},
				Script: []string{`echo "A=[${A-unset}] SHARED=[${SHARED-unset}]"`}},
		},
	})
	for _, n := range []string{"a", "b", "only-b", "all", "none"} {
		wantStatus(t, pr, n, runnerdriver.StatusSuccess)
	}
	if l := jobLog(pr, "only-b"); !strings.Contains(l, `A=[unset] B=[x=y "q"] SHARED=[b] U=[hé]`) || strings.Contains(l, "from a") {
		t.Errorf("only-b:\n%s", l)
	}
	l := jobLog(pr, "all")
	if !strings.Contains(l, `A=[from a] B=[x=y "q"] SHARED=[b]`) {
		t.Errorf("all:\n%s", l)
	}
	for _, want := range []string{"dotenv: SHARED from b replaces the one from a", "dotenv: A from a", "dotenv: B, SHARED, U from b"} {
		if !strings.Contains(l, want) {
			t.Errorf("all: log lacks %q:\n%s", want, l)
		}
	}
	if l := jobLog(pr, "none"); !strings.Contains(l, "A=[unset] SHARED=[unset]") || strings.Contains(l, "dotenv:") {
		t.Errorf("none (dependencies: []):\n%s", l)
	}
}

// TestDotenvFailedProducer: a failed producer stores nothing (its report is
// on_success); the consumer is skipped, and a `when: always` consumer gets
// nothing. With artifacts:when always, the report is kept on failure too.
func TestDotenvFailedProducer(t *testing.T) {
	d, state := dotenvDriver(t, nil, nil)
	always := runnerdriver.DotenvReport("always.env")
	always.When = "always"
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Stages: []string{"image", "deploy"},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image",
				Script:    []string{`echo IMAGE=broken > docker.env`, `echo KEPT=yes > always.env`, `exit 1`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env"), always}},
			{Name: "kube", Stage: "deploy", Needs: []runnerdriver.Need{{Job: "kaniko"}}, Script: []string{`echo "image=$IMAGE"`}},
			{Name: "report", Stage: "deploy", When: "always", Needs: []runnerdriver.Need{{Job: "kaniko"}},
				Script: []string{`echo "image=[${IMAGE-unset}] kept=[$KEPT]"`}},
		},
	})
	wantStatus(t, pr, "kaniko", runnerdriver.StatusFailed)
	wantStatus(t, pr, "kube", runnerdriver.StatusSkipped)
	wantStatus(t, pr, "report", runnerdriver.StatusSuccess)
	if l := jobLog(pr, "report"); !strings.Contains(l, "image=[unset] kept=[yes]") {
		t.Errorf("report:\n%s", l)
	}
	if l := jobLog(pr, "kaniko"); !strings.Contains(l, "dotenv: stored 1 variable (KEPT) from always.env") || strings.Contains(l, "(IMAGE)") {
		t.Errorf("kaniko:\n%s", l)
	}
	files, _ := filepath.Glob(filepath.Join(state, "dotenv", "*", "*.json"))
	if len(files) != 1 {
		t.Errorf("store: %v", files)
	}
}

// TestDotenvInvalidReportFailsProducer: GitLab's strict format, with the
// file and line in the error; the producer fails as a build failure and its
// consumer is skipped.
func TestDotenvInvalidReportFailsProducer(t *testing.T) {
	d, _ := dotenvDriver(t, nil, nil)
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Stages: []string{"image", "deploy"},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image", Script: []string{`printf 'IMAGE=x\n\nTAG=1\n' > docker.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}},
			{Name: "kube", Stage: "deploy", Needs: []runnerdriver.Need{{Job: "kaniko"}}, Script: []string{`echo "image=$IMAGE"`}},
		},
	})
	wantStatus(t, pr, "kaniko", runnerdriver.StatusFailed)
	wantStatus(t, pr, "kube", runnerdriver.StatusSkipped)
	k := pr.Jobs["kaniko"]
	if k.FailureReason != runnerdriver.ReasonScriptFailure {
		t.Errorf("failure reason %q, want script_failure (a build failure)", k.FailureReason)
	}
	if l := jobLog(pr, "kaniko"); !strings.Contains(l, "ferry: dotenv report docker.env:2: blank line: GitLab rejects dotenv files with blank lines") {
		t.Errorf("kaniko log:\n%s", l)
	}

	// The same report passes with the admin's --dotenv-lenient.
	d, _ = dotenvDriver(t, []string{"--dotenv-lenient"}, nil)
	pr = d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Stages: []string{"image", "deploy"},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image", Script: []string{`printf '# kaniko\nIMAGE=x\n\nTAG=1\n' > docker.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}},
			{Name: "kube", Stage: "deploy", Script: []string{`echo "image=$IMAGE:$TAG"`}},
		},
	})
	wantStatus(t, pr, "kube", runnerdriver.StatusSuccess)
	if l := jobLog(pr, "kube"); !strings.Contains(l, "image=x:1") {
		t.Errorf("lenient:\n%s", l)
	}
}

// TestDotenvMissingReportWarns: like gitlab-runner's uploader, a missing
// report file is a warning, not a failure.
func TestDotenvMissingReportWarns(t *testing.T) {
	d, state := dotenvDriver(t, nil, nil)
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Jobs: []runnerdriver.Job{{Name: "kaniko", Script: []string{`true`},
			Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}}},
	})
	wantStatus(t, pr, "kaniko", runnerdriver.StatusSuccess)
	if l := jobLog(pr, "kaniko"); !strings.Contains(l, "WARNING: docker.env: no matching files. Ensure that the artifact path is relative to the working directory") {
		t.Errorf("log:\n%s", l)
	}
	if files, _ := filepath.Glob(filepath.Join(state, "dotenv", "*", "*.json")); len(files) != 0 {
		t.Errorf("store: %v", files)
	}
}

// TestDotenvSecretsNeverInLog: keys the producer marks secret
// (FERRY_DOTENV_SECRET_KEYS) or the admin does (--dotenv-secret-keys) are
// masked in the consumer's log, their encoded forms too, and are not
// written to any file in the build directory.
func TestDotenvSecretsNeverInLog(t *testing.T) {
	const token, password = "tok-5ecr3t-Zq81xW", "pa55-w0rd-Lk29vB"
	d, _ := dotenvDriver(t, []string{"--dotenv-secret-keys=*_PASSWORD"}, nil)
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Stages: []string{"build", "deploy"},
		Jobs: []runnerdriver.Job{
			{Name: "producer", Stage: "build",
				Variables: []runnerdriver.Variable{{Key: "FERRY_DOTENV_SECRET_KEYS", Value: "DEPLOY_TOKEN", Public: true},
					{Key: "SRC_TOKEN", Value: token}, {Key: "SRC_PW", Value: password}},
				Script:    []string{`printf 'DEPLOY_TOKEN=%s\nDB_PASSWORD=%s\nPLAIN=visible\n' "$SRC_TOKEN" "$SRC_PW" > deploy.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("deploy.env")}},
			{Name: "consumer", Stage: "deploy",
				// DEPLOY_TOKEN is also a .gitlab-ci.yml variable: the secret
				// dotenv value must not go to GITLAB_ENV (build dir).
				Variables: []runnerdriver.Variable{{Key: "DEPLOY_TOKEN", Value: "placeholder", Public: true}},
				Script: []string{`echo "token=$DEPLOY_TOKEN pw=$DB_PASSWORD plain=$PLAIN"`,
					`echo -n "$DB_PASSWORD" | base64`, `env | grep -c PASSWORD`}},
		},
	})
	wantStatus(t, pr, "producer", runnerdriver.StatusSuccess)
	wantStatus(t, pr, "consumer", runnerdriver.StatusSuccess)
	for _, n := range []string{"producer", "consumer"} {
		l := pr.Jobs[n].Log + pr.Jobs[n].SystemLog
		for _, s := range []string{password, base64.StdEncoding.EncodeToString([]byte(password))} {
			if strings.Contains(l, s) {
				t.Errorf("%s log shows a secret %q:\n%s", n, s, runnerdriver.StripANSI(l))
			}
		}
	}
	l := jobLog(pr, "consumer")
	// DEPLOY_TOKEN is also the consumer's .gitlab-ci.yml variable: only
	// GITLAB_ENV (in the build dir) could override it, and a secret never
	// goes there, so the job's own value stays and the log says why.
	if !strings.Contains(l, "token=placeholder pw=[MASKED] plain=visible") ||
		!strings.Contains(l, "DEPLOY_TOKEN is a job variable and a secret") {
		t.Errorf("consumer:\n%s", l)
	}
	if !strings.Contains(l, "dotenv: DEPLOY_TOKEN (masked), DB_PASSWORD (masked), PLAIN from producer") {
		t.Errorf("consumer log lacks the masked names:\n%s", l)
	}
	if !strings.Contains(jobLog(pr, "producer"), "2 masked (DEPLOY_TOKEN, DB_PASSWORD)") {
		t.Errorf("producer:\n%s", jobLog(pr, "producer"))
	}
	// No file of the consumer's build dir holds a secret.
	c := pr.Jobs["consumer"]
	filepath.Walk(c.BuildsDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && !strings.HasSuffix(p, "deploy.env") {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), token) || strings.Contains(string(b), password) {
				t.Errorf("%s holds a secret", p)
			}
		}
		return nil
	})
}

// TestDotenvPrecedence: dotenv wins over .gitlab-ci.yml variables (public)
// and loses to project and pipeline variables, as in GitLab; with GitLab's
// own dotenv feature on too, the same value is noted, not doubled.
func TestDotenvPrecedence(t *testing.T) {
	d, _ := dotenvDriver(t, nil, func(c *runnerdriver.Config) { c.GitLabDotenv = true })
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Stages:           []string{"build", "deploy"},
		ProjectVariables: []runnerdriver.Variable{{Key: "FROM_PROJECT", Value: "project"}},
		Jobs: []runnerdriver.Job{
			{Name: "producer", Stage: "build",
				Script:    []string{`printf 'FROM_YML=dotenv\nFROM_PROJECT=dotenv\nBOTH=same\nREF=$CI_JOB_NAME\n' > p.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("p.env")}},
			{Name: "consumer", Stage: "deploy",
				Variables: []runnerdriver.Variable{{Key: "FROM_YML", Value: "yml", Public: true}},
				Script:    []string{`echo "yml=$FROM_YML project=$FROM_PROJECT both=$BOTH ref=$REF"`}},
		},
	})
	wantStatus(t, pr, "consumer", runnerdriver.StatusSuccess)
	l := jobLog(pr, "consumer")
	if !strings.Contains(l, "yml=dotenv project=project both=same ref=consumer") {
		t.Errorf("consumer:\n%s", l)
	}
	if !strings.Contains(l, "BOTH (same value already set by GitLab)") {
		t.Errorf("consumer log:\n%s", l)
	}
}

// TestDotenvExpiry: a report lives as long as the artifact's expire_in; an
// expired one is not used (with a warning) and the next prepare's sweep
// removes it from the store.
func TestDotenvExpiry(t *testing.T) {
	d, state := dotenvDriver(t, []string{"--dotenv-sweep-every=1ns"}, nil)
	short := runnerdriver.DotenvReport("docker.env")
	short.ExpireIn = "1 sec"
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Stages: []string{"image", "wait", "deploy"},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image", Script: []string{`echo IMAGE=x > docker.env`}, Artifacts: []runnerdriver.Artifact{short}},
			{Name: "pause", Stage: "wait", Script: []string{`sleep 1.2`}},
			{Name: "kube", Stage: "deploy", Needs: []runnerdriver.Need{{Job: "kaniko"}}, Script: []string{`echo "image=[${IMAGE-unset}]"`}},
		},
	})
	wantStatus(t, pr, "kube", runnerdriver.StatusSuccess)
	if l := jobLog(pr, "kaniko"); !strings.Contains(l, "expires in 1 sec") {
		t.Errorf("kaniko:\n%s", l)
	}
	// Every prepare sweeps (--dotenv-sweep-every=1ns): on a loaded machine the
	// report may already have expired when pause's prepare runs, so the sweep
	// that removes it is pause's or kube's; either way kube must not get it.
	l := jobLog(pr, "kube")
	if !strings.Contains(l, "image=[unset]") {
		t.Errorf("kube got the expired report:\n%s", l)
	}
	const removed = "dotenv: removed 1 expired report(s)"
	if !strings.Contains(l, removed) && !strings.Contains(jobLog(pr, "pause"), removed) {
		t.Errorf("no prepare swept the expired report:\npause:\n%s\nkube:\n%s", jobLog(pr, "pause"), l)
	}
	if files, _ := filepath.Glob(filepath.Join(state, "dotenv", "*", "*.json")); len(files) != 0 {
		t.Errorf("expired report still stored: %v", files)
	}
}

// TestDotenvLenientStillUploadedToGitLab documents the caveat: GitLab parses
// every uploaded report, so a file only --dotenv-lenient accepts fails the
// runner's upload after ferry stored it, and ferry's warning-free capture
// does not make the job pass.
func TestDotenvLenientStillUploadedToGitLab(t *testing.T) {
	d, _ := dotenvDriver(t, []string{"--dotenv-lenient"}, func(c *runnerdriver.Config) { c.GitLabDotenv = true })
	pr := d.RunPipeline(ctxFor(t), runnerdriver.Pipeline{
		Jobs: []runnerdriver.Job{{Name: "kaniko", Script: []string{`printf '# c\nIMAGE=x\n' > docker.env`},
			Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}}},
	})
	wantStatus(t, pr, "kaniko", runnerdriver.StatusFailed)
	if l := jobLog(pr, "kaniko"); !strings.Contains(l, "dotenv: stored 1 variable (IMAGE) from docker.env") {
		t.Errorf("log:\n%s", l)
	}
}
