// Package runnerdriver runs CI jobs and small pipelines through the built
// `ferry` binary exactly as gitlab-runner (16.11+, bash shell, custom executor)
// drives a custom executor, so ferry can be tested without a runner or GitLab.
//
// What it reproduces of the runner (see docs/driver.md for the full list and
// for what it does not):
//   - the calls: `config_exec` (JSON stdout parsed), `prepare_exec`, one
//     `run_exec <script> <stage>` per stage, `cleanup_exec` always; config+prepare
//     retried on system failures with a cleanup after each failed attempt;
//   - the process environment: CUSTOM_ENV_<KEY> for every job variable (the
//     runner's own CI_* included), BUILD_FAILURE_EXIT_CODE=1,
//     SYSTEM_FAILURE_EXIT_CODE=2, BUILD_EXIT_CODE_FILE, JOB_RESPONSE_FILE,
//     TMPDIR and the working directory (a per-job temp dir), job_env from config;
//   - the generated bash stage scripts (trap, errexit, one eval of an ANSI-C
//     quoted body, every variable exported by every stage, File variables
//     written to <CI_PROJECT_DIR>.tmp/<KEY>, GITLAB_ENV, `$ command` echo);
//   - stage sequences with FF_SKIP_NOOP_BUILD_STAGES, a real git checkout in
//     get_sources, artifact download/upload through a `gitlab-runner` shim;
//   - process groups, SIGTERM then SIGKILL on cancel and timeout;
//   - the job log as GitLab shows it (sections, runner lines, masked values),
//     with cleanup output kept apart in a system log.
//
// Typical use:
//
//	d, err := runnerdriver.New(runnerdriver.Config{FerryBinary: bin, BaseDir: t.TempDir()})
//	res := d.RunJob(ctx, runnerdriver.Job{Name: "build", Script: []string{"echo hi"}})
//	res.Status, res.FailureReason, res.ScriptExitCode, res.Log, res.Stages
//
//	pr := d.RunPipeline(ctx, runnerdriver.Pipeline{Jobs: []runnerdriver.Job{...}})
//	pr.Jobs["kube"].Log
package runnerdriver

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Driver. Only FerryBinary and BaseDir are required.
type Config struct {
	// FerryBinary is the path of the built ferry executable.
	FerryBinary string
	// BaseDir holds everything the driver creates: per-job temp dirs, the
	// artifact store, git repositories, the default builds dir, the shim.
	BaseDir string

	// ExtraArgs are appended to the arguments of every call (e.g. --state-dir=...).
	ExtraArgs []string
	// Per-call arguments, given right after the subcommand. ferry's
	// subcommands are always first: `ferry config <ConfigArgs...> <ExtraArgs...>`.
	ConfigArgs, PrepareArgs, RunArgs, CleanupArgs []string
	// NoConfigExec leaves config_exec out (the runner allows it); the driver
	// then uses BuildsDir.
	NoConfigExec bool

	// Env is the runner's own process environment given to every call. Nil
	// means os.Environ(). The shim's directory is prepended to its PATH.
	Env []string

	// BuildsDir is the runner's builds_dir, used when config_exec does not
	// return one. Default <BaseDir>/builds.
	BuildsDir string

	ServerURL        string // default https://gitlab.example.com
	RunnerShortToken string // default "ferrydrv" (8 characters, like the runner's)
	RunnerName       string // default "ferry-driver"
	// RunnerVersion is CI_RUNNER_VERSION and selects the runner behaviour
	// modelled (version.go: Runner16, Runner17, Runner18, Runner19 or any
	// other); default DefaultRunnerVersion (Runner19).
	RunnerVersion   string
	RunnerVariables []Variable

	// StepScript names the user-script stage step_script instead of
	// build_script. No runner up to 19.3 does (they print a warning that the
	// name will change, but send build_script); it is for testing that ferry
	// runs any stage name.
	StepScript bool
	// GitlabEnv selects how stage scripts read GITLAB_ENV; the default
	// follows RunnerVersion (allexport before 17.7, line by line since).
	GitlabEnv GitlabEnvMode
	// ScriptSections wraps every script line in a section (FF_SCRIPT_SECTIONS).
	ScriptSections bool

	// GitLabDotenv makes the gitlab-runner shim behave like GitLab's own
	// dotenv feature: reports are parsed strictly, invalid ones fail the
	// upload, and their variables reach downstream jobs' payloads. Default off:
	// ferry carries dotenv itself.
	GitLabDotenv bool
	// DotenvMaxVariables is GitLab's per-file variable limit (default 20, self-managed).
	DotenvMaxVariables int

	// PrepareAttempts is how often config+prepare is tried (runner: 3).
	PrepareAttempts int
	// PrepareRetryDelay is the pause between attempts (runner: 3s).
	PrepareRetryDelay time.Duration
	// GracefulKillTimeout is the wait between SIGTERM and SIGKILL (runner
	// default 10m; default here 10s).
	GracefulKillTimeout time.Duration
	// ForceKillTimeout is the wait after SIGKILL (default 10s).
	ForceKillTimeout time.Duration
	// PipeWaitDelay bounds how long the driver waits, after an executor call
	// exited, for a leftover process still holding its output pipe. The real
	// runner waits forever (the job hangs until its timeout); such a call is
	// flagged in Call.PipeHeldOpen. Default 5s.
	PipeWaitDelay time.Duration
	// CleanupTimeout bounds cleanup_exec (runner: 5m). Default 1m.
	CleanupTimeout time.Duration
	// PrepareTimeout is [[runners]] prepare_timeout (19.0+): it bounds
	// config_exec, prepare_exec and the prepare_script run_exec call,
	// retries included; the running call gets SIGTERM, then SIGKILL after
	// GracefulKillTimeout, and the job fails with job_execution_timeout.
	// Zero: the job timeout (the runner's default). Ignored before 19.0.
	PrepareTimeout time.Duration
	// GetSourcesTimeout is get_sources_timeout (19.1+): it bounds every
	// get_sources attempt together, the same way. Zero: the job timeout.
	GetSourcesTimeout time.Duration

	// FirstJobID and FirstPipelineID seed the id counters. Default: random,
	// so drivers sharing a ferry state dir do not collide.
	FirstJobID, FirstPipelineID int

	// ShimBinary is a prebuilt gitlab-runner shim
	// (./internal/runnerdriver/internal/glshim); empty builds it with `go build`.
	// A driver running as a user without the Go toolchain's caches (the
	// sandbox tests' unprivileged runner user) needs it.
	ShimBinary string

	// SandboxReadable are more paths the driver gives ferry as readable by
	// jobs (FERRY_SANDBOX_READABLE, with its own repositories and shim): a
	// test's hand-over dir under /tmp, which a job's private /tmp would
	// hide. They must exist before the job starts.
	SandboxReadable []string

	// LogWriter, when set, receives every job's (masked) log as it is written.
	// Concurrent jobs interleave there; each result's Log is separate.
	LogWriter io.Writer
}

// Driver runs jobs through the ferry binary. It is safe for concurrent use:
// concurrent jobs get distinct CI_JOB_ID, CI_CONCURRENT_ID and
// CI_CONCURRENT_PROJECT_ID, like jobs of one runner host.
type Driver struct {
	cfg     Config
	ver     runnerVersion
	shimDir string
	shimBin string // the gitlab-runner shim's binary (the shimDir script execs it)
	store   string // artifact store root

	mu        sync.Mutex
	nextJob   int
	nextPipe  int
	runnerIDs map[int]bool            // CI_CONCURRENT_ID slots in use
	projIDs   map[string]map[int]bool // per project: CI_CONCURRENT_PROJECT_ID slots in use
	logMu     sync.Mutex              // serialises writes to cfg.LogWriter
}

// New checks the configuration, creates BaseDir's layout and builds the
// gitlab-runner shim.
func New(cfg Config) (*Driver, error) {
	if cfg.FerryBinary == "" {
		return nil, errors.New("runnerdriver: Config.FerryBinary is required")
	}
	if cfg.BaseDir == "" {
		return nil, errors.New("runnerdriver: Config.BaseDir is required")
	}
	bin, err := filepath.Abs(cfg.FerryBinary)
	if err != nil {
		return nil, fmt.Errorf("runnerdriver: ferry binary: %w", err)
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("runnerdriver: ferry binary: %w", err)
	}
	cfg.FerryBinary = bin
	if cfg.BaseDir, err = filepath.Abs(cfg.BaseDir); err != nil {
		return nil, fmt.Errorf("runnerdriver: base dir: %w", err)
	}
	setDefaults(&cfg)
	d := &Driver{
		cfg:       cfg,
		ver:       parseRunnerVersion(cfg.RunnerVersion),
		shimDir:   filepath.Join(cfg.BaseDir, "runner-bin"),
		store:     filepath.Join(cfg.BaseDir, "artifacts"),
		nextJob:   cfg.FirstJobID,
		nextPipe:  cfg.FirstPipelineID,
		runnerIDs: map[int]bool{},
		projIDs:   map[string]map[int]bool{},
	}
	for _, dir := range []string{cfg.BaseDir, d.shimDir, d.store, filepath.Join(cfg.BaseDir, "tmp"), filepath.Join(cfg.BaseDir, "repos"), cfg.BuildsDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("runnerdriver: %w", err)
		}
	}
	if err := d.installShim(); err != nil {
		return nil, err
	}
	return d, nil
}

func setDefaults(c *Config) {
	if c.Env == nil {
		c.Env = os.Environ()
	}
	if c.BuildsDir == "" {
		c.BuildsDir = filepath.Join(c.BaseDir, "builds")
	}
	if c.ServerURL == "" {
		c.ServerURL = "https://gitlab.example.com"
	}
	c.ServerURL = strings.TrimRight(c.ServerURL, "/")
	if c.RunnerShortToken == "" {
		c.RunnerShortToken = "ferrydrv"
	}
	if c.RunnerName == "" {
		c.RunnerName = "ferry-driver"
	}
	if c.RunnerVersion == "" {
		// FERRY_RUNNER_VERSION runs a whole test suite under another
		// modelled runner (make test-runner-versions).
		c.RunnerVersion = DefaultRunnerVersion
		if v := os.Getenv(RunnerVersionVar); v != "" {
			c.RunnerVersion = v
		}
	}
	if c.GitlabEnv == GitlabEnvByVersion {
		c.GitlabEnv = GitlabEnvAllexport
		if parseRunnerVersion(c.RunnerVersion).gitlabEnvLines() {
			c.GitlabEnv = GitlabEnvExportLines
		}
	}
	if c.DotenvMaxVariables == 0 {
		c.DotenvMaxVariables = 20
	}
	if c.PrepareAttempts == 0 {
		c.PrepareAttempts = 3
	}
	if c.PrepareRetryDelay == 0 {
		c.PrepareRetryDelay = 3 * time.Second
	}
	if c.GracefulKillTimeout == 0 {
		c.GracefulKillTimeout = 10 * time.Second
	}
	if c.ForceKillTimeout == 0 {
		c.ForceKillTimeout = 10 * time.Second
	}
	if c.PipeWaitDelay == 0 {
		c.PipeWaitDelay = 5 * time.Second
	}
	if c.CleanupTimeout == 0 {
		c.CleanupTimeout = time.Minute
	}
	if c.FirstJobID == 0 {
		c.FirstJobID = 100000 + rand.IntN(800000)*10
	}
	if c.FirstPipelineID == 0 {
		c.FirstPipelineID = nextPipelineBase()
	}
}

// ArtifactStore is the directory where uploaded artifacts are kept:
// <store>/<job id>/<artifact type>/<paths as uploaded>.
func (d *Driver) ArtifactStore() string { return d.store }

func (d *Driver) newJobID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	id := d.nextJob
	d.nextJob++
	return id
}

func (d *Driver) newPipelineID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	id := d.nextPipe
	d.nextPipe++
	return id
}

// acquireSlots takes the lowest free CI_CONCURRENT_ID and, for the project,
// the lowest free CI_CONCURRENT_PROJECT_ID, as the runner does for the jobs
// it runs at the same time.
func (d *Driver) acquireSlots(project string) (runnerID, projectID int, release func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.runnerIDs[runnerID] {
		runnerID++
	}
	d.runnerIDs[runnerID] = true
	p := d.projIDs[project]
	if p == nil {
		p = map[int]bool{}
		d.projIDs[project] = p
	}
	for p[projectID] {
		projectID++
	}
	p[projectID] = true
	return runnerID, projectID, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.runnerIDs, runnerID)
		delete(p, projectID)
	}
}

// pipelineBase hands each driver of a test process a range of 1000
// pipeline ids above the previous driver's, from a random start: GitLab's
// pipeline ids only grow, and ferry refuses to deploy an older pipeline of
// a project over objects a newer one deployed, so tests that share a
// cluster must not run later pipelines with lower ids.
var pipelineBase atomic.Int64

func nextPipelineBase() int {
	pipelineBase.CompareAndSwap(0, int64(1000+rand.IntN(8000)))
	return int(pipelineBase.Add(1000))
}
