package runnerdriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// jobCtx is what the pipeline gives one job: identity, repository, the
// variables GitLab adds around the job's own, and its dependencies.
type jobCtx struct {
	pipelineID  int
	projectID   int
	projectPath string
	ref, sha    string
	repoURL     string

	globalVars   []Variable // top-level .gitlab-ci.yml variables
	dotenvVars   []Variable // from dependencies' dotenv reports (GitLabDotenv)
	projectVars  []Variable
	pipelineVars []Variable
	deps         []dependency
}

// dependency is one payload dependencies[] entry.
type dependency struct {
	ID       int
	Token    string
	Name     string
	Filename string // artifacts_file.filename; non-empty when it has archive artifacts
	Size     int64
}

// jobRun is the state of one job while it runs.
type jobRun struct {
	d   *Driver
	job Job
	jc  *jobCtx
	res *JobResult

	id    int
	token string

	log    *jobLog
	sysLog bytes.Buffer
	sysMu  sync.Mutex

	tmpDir       string // runner's per-job temp dir (TMPDIR, cwd)
	responseFile string
	jobEnv       map[string]string
	hostname     string
	buildsDir    string
	shared       bool
	projectDir   string
	jobStatus    string // CI_JOB_STATUS

	driverName, driverVersion string

	prepCtx       context.Context // bounded by prepare_timeout (19.0+)
	stageTimedOut string          // "prepare" or "get_sources" when its own timeout ran out

	concurrentID, concurrentProjectID int
}

// RunJob runs one job on its own (a one-job pipeline: its Files/SourceDir are
// the repository). ctx ending aborts the job like a runner shutdown.
func (d *Driver) RunJob(ctx context.Context, job Job) *JobResult {
	if job.Name == "" {
		job.Name = "job"
	}
	p := Pipeline{Jobs: []Job{job}}
	pr := d.RunPipeline(ctx, p)
	return pr.Jobs[job.Name]
}

func (d *Driver) sysf(jr *jobRun, format string, a ...any) {
	jr.sysMu.Lock()
	defer jr.sysMu.Unlock()
	fmt.Fprintf(&jr.sysLog, format+"\n", a...)
}

// runJob runs one job through ferry the way the runner's Build.Run does.
func (d *Driver) runJob(ctx context.Context, job Job, jc *jobCtx) *JobResult {
	start := time.Now()
	jr := &jobRun{d: d, job: job, jc: jc, id: d.newJobID(), jobStatus: "running"}
	jr.token = jobToken(jr.id)
	jr.res = &JobResult{Name: job.Name, ID: jr.id, Stage: job.Stage}
	res := jr.res
	var release func()
	jr.concurrentID, jr.concurrentProjectID, release = d.acquireSlots(jc.projectPath)
	defer release()
	res.ConcurrentID, res.ConcurrentProjectID = jr.concurrentID, jr.concurrentProjectID

	jobCtx := ctx
	var cancelTimeout context.CancelFunc = func() {}
	if job.Timeout > 0 {
		jobCtx, cancelTimeout = context.WithTimeout(ctx, job.Timeout)
	}
	defer cancelTimeout()
	// uiCtx ends on a UI-style cancel; the stages that still run after a
	// cancel (after_script, uploads, cleanup_file_variables) use jobCtx.
	uiCtx, uiCancel := context.WithCancel(jobCtx)
	defer uiCancel()
	var canceledFlag atomic.Bool
	cancelUI := func() {
		canceledFlag.Store(true)
		uiCancel()
	}
	if job.CancelAfter > 0 {
		t := time.AfterFunc(job.CancelAfter, cancelUI)
		defer t.Stop()
	}
	jr.log = newJobLog(d, jr.maskedValues(), jr.timestamps(), job.CancelOnLog, job.OnLog, cancelUI)

	jr.log.raw(fmt.Sprintf("Running with gitlab-runner %s (ferrydrv)\n", d.cfg.RunnerVersion))
	jr.log.raw(fmt.Sprintf("  on %s %s, system ID: s_ferrydriver00\n", d.cfg.RunnerName, d.cfg.RunnerShortToken))

	// 19.0+: prepare_timeout bounds config, prepare (retries included) and
	// the prepare_script stage.
	prepCtx, cancelPrep := uiCtx, context.CancelFunc(func() {})
	if d.ver.prepareTimeout() && d.cfg.PrepareTimeout > 0 {
		prepCtx, cancelPrep = context.WithTimeout(uiCtx, d.cfg.PrepareTimeout)
	}
	defer cancelPrep()
	jr.prepCtx = prepCtx
	err := jr.prepare(prepCtx)
	prepared := err == nil
	scriptStarted := false
	if prepared {
		scriptStarted, err = jr.stages(uiCtx)
	}
	cancelPrep()
	if jr.stageTimedOut == "" && prepCtx.Err() == context.DeadlineExceeded && uiCtx.Err() == nil && !prepared {
		jr.stageTimedOut = "prepare"
	}
	finished := jobCtx.Err() == nil
	canceled := canceledFlag.Load()

	if err == nil && canceled {
		err = errors.New("canceled")
	}
	// Stages that run after the main ones, unless the job context ended.
	if err != nil || canceled {
		jr.jobStatus = "failed"
		if canceled {
			jr.jobStatus = "canceled"
		}
	} else {
		jr.jobStatus = "success"
	}
	if scriptStarted && finished && len(job.AfterScript) > 0 {
		afterCtx, c := context.WithTimeout(jobCtx, 5*time.Minute)
		aerr := jr.stage(afterCtx, StageAfterScript, StageAfterScript, jr.afterScript())
		c()
		// 17.3+: AFTER_SCRIPT_IGNORE_ERRORS=false makes a failing
		// after_script fail a job that had passed.
		if aerr != nil && err == nil && !canceled && d.ver.afterScriptCanFail() && jr.variable("AFTER_SCRIPT_IGNORE_ERRORS") == "false" {
			err = aerr
			jr.jobStatus = "failed"
		}
	}
	if prepared && jobCtx.Err() == nil {
		failed := err != nil || canceled
		upStage := StageUploadOnSuccess
		if failed {
			upStage = StageUploadOnFailure
		}
		if arts := jr.artifactsFor(!failed); len(arts) > 0 {
			if uerr := jr.stage(jobCtx, upStage, upStage, jr.uploadScript(arts)); uerr != nil && err == nil {
				err = uerr
			}
		}
		_ = jr.stage(jobCtx, StageCleanupFileVariables, StageCleanupFileVariables, jr.cleanupFileVariablesScript())
	}
	if jr.tmpDir != "" {
		jr.cleanup(0)
	}

	// Outcome, as GitLab records it.
	switch {
	case canceled && jobCtx.Err() == nil:
		res.Status, res.Error = StatusCanceled, "canceled"
	case jr.stageTimedOut != "" && jobCtx.Err() == nil:
		// prepare_timeout (19.0) or get_sources_timeout (19.1) ran out.
		res.Status, res.FailureReason = StatusFailed, ReasonTimeout
		res.Error = jr.stageTimedOut + " timed out"
	case jobCtx.Err() != nil && ctx.Err() == nil:
		res.Status, res.FailureReason = StatusFailed, ReasonTimeout
		res.Error = fmt.Sprintf("execution took longer than %v seconds", job.Timeout)
	case ctx.Err() != nil:
		res.Status, res.FailureReason = StatusFailed, ReasonSystemFailure
		res.Error = "aborted: " + ctx.Err().Error()
	case err == nil:
		res.Status = StatusSuccess
	case isBuildError(err):
		res.Status, res.FailureReason = StatusFailed, ReasonScriptFailure
		var ce *callError
		errors.As(err, &ce)
		res.ScriptExitCode = ce.exitCode
		res.Error = fmt.Sprintf("exit code %d", ce.exitCode)
	default:
		res.Status, res.FailureReason = StatusFailed, ReasonSystemFailure
		res.Error = err.Error()
	}
	if res.Status == StatusFailed && job.AllowFailure {
		res.AllowedFailure = true
	}
	switch {
	case res.Status == StatusSuccess:
		jr.log.raw(ansiBoldGreen + "Job succeeded" + ansiReset + "\n")
	case res.FailureReason == ReasonSystemFailure:
		jr.log.raw(ansiBoldRed + "ERROR: Job failed (system failure): " + res.Error + ansiReset + "\n")
	default:
		jr.log.raw(ansiBoldRed + "ERROR: Job failed: " + res.Error + ansiReset + "\n")
	}
	res.Log, res.Trace = jr.log.close()
	res.SystemLog = jr.sysLog.String()
	res.Duration = time.Since(start)
	res.Artifacts = d.storedArtifacts(jr.id)
	if d.cfg.GitLabDotenv {
		res.Dotenv = d.storedDotenv(jr.id)
	}
	return res
}

// maskedValues are the values the runner masks: those of masked variables.
func (jr *jobRun) maskedValues() []string {
	var out []string
	for _, v := range jr.payloadVariables() {
		if v.Masked && v.Value != "" {
			out = append(out, v.Value)
		}
	}
	return out
}

// prepare is the runner's "prepare" step: config_exec and prepare_exec,
// retried on system failures with a cleanup after every failed attempt.
func (jr *jobRun) prepare(ctx context.Context) error {
	d := jr.d
	end := jr.log.section("prepare_executor", `Preparing the "custom" executor`)
	defer end()
	var err error
	for attempt := 1; attempt <= d.cfg.PrepareAttempts; attempt++ {
		err = jr.prepareOnce(ctx, attempt)
		if err == nil {
			return nil
		}
		if jr.tmpDir != "" {
			jr.cleanup(attempt)
		}
		if isBuildError(err) || ctx.Err() != nil {
			return err
		}
		if attempt == d.cfg.PrepareAttempts {
			break
		}
		jr.log.raw(fmt.Sprintf("%sERROR: Preparation failed: %v%s\n", ansiBoldRed, err, ansiReset))
		jr.log.raw(fmt.Sprintf("Will be retried in %v ...\n", d.cfg.PrepareRetryDelay))
		select {
		case <-time.After(d.cfg.PrepareRetryDelay):
		case <-ctx.Done():
			return err
		}
	}
	return err
}

func (jr *jobRun) prepareOnce(ctx context.Context, attempt int) error {
	d := jr.d
	var err error
	jr.tmpDir, err = os.MkdirTemp(filepath.Join(d.cfg.BaseDir, "tmp"), "custom-executor")
	if err != nil {
		return err
	}
	jr.responseFile = filepath.Join(jr.tmpDir, "response.json")
	jr.jobEnv, jr.hostname, jr.buildsDir, jr.shared, jr.projectDir = nil, "", "", false, ""
	payload, err := jr.payloadJSON()
	if err != nil {
		return fmt.Errorf("encoding job response file: %w", err)
	}
	jr.res.PayloadJSON = payload
	if err := os.WriteFile(jr.responseFile, payload, 0o600); err != nil {
		return fmt.Errorf("creating job response file: %w", err)
	}

	if !d.cfg.NoConfigExec {
		var stdout bytes.Buffer
		args := append(append([]string{"config"}, d.cfg.ConfigArgs...), d.cfg.ExtraArgs...)
		c, err := d.run(ctx, callSpec{kind: "config", args: args, env: jr.env(), dir: jr.tmpDir, out: jr.log, stdout: &stdout})
		c.Attempt = attempt
		jr.res.Calls = append(jr.res.Calls, c)
		if err != nil {
			return err
		}
		if stdout.Len() > 0 {
			if err := jr.applyConfig(stdout.Bytes()); err != nil {
				return err
			}
		}
	}
	if jr.buildsDir == "" {
		jr.buildsDir = d.cfg.BuildsDir
	}
	jr.projectDir = path.Join(jr.buildsDir, jr.projectUniqueDir())
	jr.res.BuildsDir, jr.res.ProjectDir = jr.buildsDir, jr.projectDir

	line := "Using Custom executor..."
	if jr.driverName != "" {
		line = fmt.Sprintf("Using Custom executor with driver %s...", strings.TrimSpace(jr.driverName+" "+jr.driverVersion))
	}
	jr.log.raw(line + "\n")

	args := append(append([]string{"prepare"}, d.cfg.PrepareArgs...), d.cfg.ExtraArgs...)
	c, err := d.run(ctx, callSpec{kind: "prepare", args: args, env: jr.env(), dir: jr.tmpDir, out: jr.log})
	c.Attempt = attempt
	jr.res.Calls = append(jr.res.Calls, c)
	return err
}

// configOutput is config_exec's JSON (every field optional).
type configOutput struct {
	BuildsDir         *string `json:"builds_dir"`
	CacheDir          *string `json:"cache_dir"`
	BuildsDirIsShared *bool   `json:"builds_dir_is_shared"`
	Hostname          *string `json:"hostname"`
	Driver            *struct {
		Name    *string `json:"name"`
		Version *string `json:"version"`
	} `json:"driver"`
	JobEnv *map[string]string `json:"job_env"`
	Shell  *string            `json:"shell"`
}

func (jr *jobRun) applyConfig(out []byte) error {
	var c configOutput
	if err := json.Unmarshal(out, &c); err != nil {
		return &callError{exitCode: -1, msg: fmt.Sprintf("error while parsing JSON output: %v", err)}
	}
	if c.BuildsDir != nil {
		jr.buildsDir = *c.BuildsDir
	}
	if c.BuildsDirIsShared != nil {
		jr.shared = *c.BuildsDirIsShared
	}
	if c.Hostname != nil {
		jr.hostname = *c.Hostname
	}
	if c.JobEnv != nil {
		jr.jobEnv = *c.JobEnv
	}
	jr.driverName, jr.driverVersion = "", ""
	if c.Driver != nil && c.Driver.Name != nil {
		jr.driverName = *c.Driver.Name
		if c.Driver.Version != nil {
			jr.driverVersion = *c.Driver.Version
		}
	}
	if c.Shell != nil && *c.Shell != "bash" {
		return &callError{exitCode: -1, msg: fmt.Sprintf("runnerdriver: only the bash shell is emulated, config asked for %q", *c.Shell)}
	}
	return nil
}

// projectUniqueDir is <namespace>/<project>, under <short token>/<concurrent
// project id>/ when the builds dir is shared (Build.ProjectUniqueDir).
func (jr *jobRun) projectUniqueDir() string {
	dir := jr.jc.projectPath
	if jr.shared {
		dir = path.Join(jr.d.cfg.RunnerShortToken, strconv.Itoa(jr.concurrentProjectID), dir)
	}
	return dir
}

// cleanup runs cleanup_exec; its output goes to the system log only.
func (jr *jobRun) cleanup(attempt int) {
	d := jr.d
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.CleanupTimeout)
	defer cancel()
	var out bytes.Buffer
	args := append(append([]string{"cleanup"}, d.cfg.CleanupArgs...), d.cfg.ExtraArgs...)
	c, err := d.run(ctx, callSpec{kind: "cleanup", args: args, env: jr.env(), dir: jr.tmpDir, out: &out})
	c.Attempt = attempt
	jr.res.Calls = append(jr.res.Calls, c)
	jr.sysMu.Lock()
	jr.sysLog.Write(out.Bytes())
	jr.sysMu.Unlock()
	if err != nil {
		d.sysf(jr, "WARNING: Cleanup script failed: %v", err)
	}
	_ = os.RemoveAll(jr.tmpDir)
	jr.tmpDir = ""
}

// stage runs one stage script through `ferry run` inside its log section.
// section is the name in the job log (the runner's build stage), stage the
// name given to run_exec.
func (jr *jobRun) stage(ctx context.Context, section, stage, script string) error {
	d := jr.d
	end := jr.log.section(section, stageDescription(section))
	defer end()
	scriptDir, err := os.MkdirTemp(jr.tmpDir, "script")
	if err != nil {
		return err
	}
	scriptFile := filepath.Join(scriptDir, d.ver.scriptName())
	if err := os.WriteFile(scriptFile, []byte(script), 0o700); err != nil {
		return err
	}
	args := append(append(append([]string{"run"}, d.cfg.RunArgs...), d.cfg.ExtraArgs...), scriptFile, stage)
	env := jr.env()
	// 17.9+: one exit-code file for every run_exec call of the job, so a
	// code one stage leaves there is read again for a later build failure
	// unless the executor rewrites it.
	exitFile := filepath.Join(jr.tmpDir, "build_exit_code")
	if d.ver.exitCodeFile() {
		env = append(env, "BUILD_EXIT_CODE_FILE="+exitFile)
	}
	jr.res.Stages = append(jr.res.Stages, stage)
	c, err := d.run(ctx, callSpec{kind: "run", stage: stage, args: args, env: env, dir: jr.tmpDir, out: jr.log})
	jr.res.Calls = append(jr.res.Calls, c)
	var ce *callError
	if errors.As(err, &ce) && ce.build && d.ver.exitCodeFile() {
		// The job's exit code is the file's first line; no file leaves the
		// executor's exit code, an unparsable line is a system failure.
		b, rerr := os.ReadFile(exitFile)
		if rerr == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			n, perr := strconv.Atoi(strings.TrimSpace(first))
			if perr != nil {
				return &callError{exitCode: -1, msg: fmt.Sprintf("unknown Custom executor executable exit code: reading BUILD_EXIT_CODE_FILE: %v", perr)}
			}
			ce.exitCode = n
		}
	}
	return err
}

// stageDescription is the header the runner prints for a stage section.
func stageDescription(stage string) string {
	switch stage {
	case StagePrepare:
		return "Preparing environment"
	case StageGetSources:
		return "Getting source from Git repository"
	case StageDownloadArtifacts:
		return "Downloading artifacts"
	case StageAfterScript:
		return "Running after_script"
	case StageUploadOnSuccess:
		return "Uploading artifacts for successful job"
	case StageUploadOnFailure:
		return "Uploading artifacts for failed job"
	case StageCleanupFileVariables:
		return "Cleaning up project directory and file based variables"
	}
	return fmt.Sprintf("Executing %q stage of the job script", stage)
}

// stages runs the build stages of a prepared job; it reports whether the
// user script was reached (after_script runs only then).
func (jr *jobRun) stages(ctx context.Context) (bool, error) {
	userStage := StageBuildScript
	if jr.d.cfg.StepScript {
		userStage = StageStepScript
	}
	prepCtx := jr.prepCtx
	if prepCtx == nil {
		prepCtx = ctx
	}
	if err := jr.stage(prepCtx, StagePrepare, StagePrepare, jr.prepareScript()); err != nil {
		if prepCtx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			jr.stageTimedOut = "prepare"
		}
		return false, err
	}
	// GET_SOURCES_ATTEMPTS (1 to 10): the stage is run again after any
	// failure; what a failed attempt left (files, the exit-code file) stays.
	attempts := 1
	if n, err := strconv.Atoi(jr.variable("GET_SOURCES_ATTEMPTS")); err == nil && n >= 1 && n <= 10 {
		attempts = n
	}
	// 19.1+: get_sources_timeout bounds every attempt together.
	srcCtx, cancelSrc := ctx, context.CancelFunc(func() {})
	if jr.d.ver.getSourcesTimeout() && jr.d.cfg.GetSourcesTimeout > 0 {
		srcCtx, cancelSrc = context.WithTimeout(ctx, jr.d.cfg.GetSourcesTimeout)
	}
	defer cancelSrc()
	for a := 1; ; a++ {
		err := jr.stage(srcCtx, StageGetSources, StageGetSources, jr.getSourcesScript())
		if err == nil {
			break
		}
		if srcCtx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			jr.stageTimedOut = "get_sources"
			return false, err
		}
		if a >= attempts || ctx.Err() != nil {
			return false, err
		}
	}
	if deps := jr.depsWithArtifacts(); len(deps) > 0 {
		if err := jr.stage(ctx, StageDownloadArtifacts, StageDownloadArtifacts, jr.downloadScript(deps)); err != nil {
			return false, err
		}
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if len(jr.scriptSteps()) > 0 {
		if err := jr.stage(ctx, StageStepScript, userStage, jr.userScript(jr.scriptSteps())); err != nil {
			return true, err
		}
	}
	for _, s := range jr.job.Steps {
		name := "step_" + s.Name
		if err := jr.stage(ctx, name, name, jr.userScript(s.Script)); err != nil {
			return true, err
		}
	}
	return true, ctx.Err()
}

func (jr *jobRun) scriptSteps() []string {
	return append(append([]string(nil), jr.job.BeforeScript...), jr.job.Script...)
}

// artifactsFor lists the artifacts the upload stage of a successful (or
// failed) job uploads; empty means the stage is skipped (FF_SKIP_NOOP_BUILD_STAGES).
func (jr *jobRun) artifactsFor(success bool) []Artifact {
	var out []Artifact
	for _, a := range jr.job.Artifacts {
		when := a.When
		if when == "" {
			when = "on_success"
		}
		if len(a.Paths) == 0 {
			continue
		}
		if when == "always" || (success && when == "on_success") || (!success && when == "on_failure") {
			out = append(out, a)
		}
	}
	return out
}

func (jr *jobRun) depsWithArtifacts() []dependency {
	var out []dependency
	for _, dep := range jr.jc.deps {
		if dep.Filename != "" {
			out = append(out, dep)
		}
	}
	return out
}

// timestamps reports whether the runner prefixes the job's trace lines with
// timestamps: FF_TIMESTAMPS as a job variable, else the version's default.
func (jr *jobRun) timestamps() bool {
	switch jr.variable("FF_TIMESTAMPS") {
	case "true", "1":
		return jr.d.ver.timestampsFlag()
	case "false", "0":
		return false
	}
	return jr.d.ver.timestampsByDefault()
}
