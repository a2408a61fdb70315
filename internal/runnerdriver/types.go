package runnerdriver

import "time"

// Variable is a CI/CD variable as GitLab sends it in the job payload.
type Variable struct {
	Key    string
	Value  string
	File   bool // a File variable: Value is the file's content
	Masked bool // the runner replaces the exact value by [MASKED] in the job log
	Raw    bool // not expanded
	Public bool
}

// Artifact is one `artifacts:` entry of the payload (a report is its own entry).
type Artifact struct {
	Name     string
	Paths    []string
	When     string // on_success (default), on_failure, always
	Type     string // archive (default), dotenv, junit, ...
	Format   string // zip for archive, gzip for reports (default by type)
	ExpireIn string
}

// DotenvReport is the payload entry GitLab sends for `artifacts:reports:dotenv: <path>`.
func DotenvReport(path string) Artifact {
	return Artifact{Name: ".env", Paths: []string{path}, When: "on_success", Type: "dotenv", Format: "gzip"}
}

// Service is one `services:` entry.
type Service struct {
	Name      string
	Alias     string
	Command   []string
	Variables []Variable // 19.0+: in services[].variables and CI_JOB_SERVICES
}

// Need is one `needs:` entry. GitLab's `artifacts:` defaults to true, hence
// the negative field.
type Need struct {
	Job           string
	SkipArtifacts bool // `artifacts: false`
}

// Step is an extra payload step; the runner runs it as stage `step_<Name>`
// after the main script.
type Step struct {
	Name   string
	Script []string
}

// Job describes one CI job the way .gitlab-ci.yml and the project settings
// would produce it.
type Job struct {
	Name  string
	Stage string // default "test"

	BeforeScript []string // GitLab prepends it to Script in the payload
	// PreGetSourcesScript is hooks:pre_get_sources_script: run at the start
	// of get_sources (every attempt, GET_SOURCES_ATTEMPTS).
	PreGetSourcesScript []string
	Script              []string
	AfterScript         []string
	Steps               []Step // extra steps (run as step_<name> stages)

	// Variables are the job's .gitlab-ci.yml variables (lowest user precedence).
	Variables []Variable
	Artifacts []Artifact

	Needs        []Need   // nil: no `needs:`; empty non-nil: `needs: []`
	Dependencies []string // nil: no `dependencies:`; empty non-nil: `dependencies: []`
	When         string   // on_success (default), always, on_failure, never, manual
	AllowFailure bool
	Image        string // CUSTOM_ENV_CI_JOB_IMAGE
	// Services are `services:` (payload services[], CI_JOB_SERVICES);
	// their variables reach the payload since 19.0.
	Services []Service

	// 18.7+ payload fields: Inputs (`inputs`, {} when none), Run (18.9+
	// `run`, an array of step objects, left out when empty) and Tracing
	// (19.0+ features.tracing; nil sends null).
	Inputs  map[string]any
	Run     []any
	Tracing map[string]any

	// Files and SourceDir make up the repository commit the job checks out
	// (merged with the pipeline's; for RunJob they are the whole repository).
	Files     map[string]string
	SourceDir string

	// Timeout is the job timeout: the running call is stopped (SIGTERM, then
	// SIGKILL) and only cleanup_exec runs after it, as with the runner.
	Timeout time.Duration
	// CancelAfter and CancelOnLog cancel the job like the UI's cancel button:
	// the running call is stopped, then after_script, the failure uploads,
	// cleanup_file_variables and cleanup_exec still run.
	CancelAfter time.Duration
	CancelOnLog string
	// OnLog, when set, is called with the job log (masked) so far after
	// every write; returning true cancels the job like CancelOnLog.
	OnLog func(log []byte) bool
}

// Call is one executor invocation.
type Call struct {
	Kind     string // config, prepare, run, cleanup
	Stage    string // for run
	Args     []string
	Attempt  int  // 1-based prepare attempt for config/prepare/cleanup-after-failure
	ExitCode int  // -1 when it did not exit normally (signal, start failure)
	Signaled bool // the driver sent SIGTERM (and maybe SIGKILL) to its group
	// PipeHeldOpen is set when a process left behind by the call still held
	// its output pipe PipeWaitDelay after it exited (the real runner would
	// hang there until the job timeout).
	PipeHeldOpen bool
	Duration     time.Duration
	Err          string
}

// Job statuses and failure reasons, with GitLab's names.
const (
	StatusSuccess  = "success"
	StatusFailed   = "failed"
	StatusCanceled = "canceled"
	StatusSkipped  = "skipped"

	ReasonScriptFailure = "script_failure"
	ReasonSystemFailure = "runner_system_failure"
	ReasonTimeout       = "job_execution_timeout"
)

// StoredArtifact is one upload the gitlab-runner shim received.
type StoredArtifact struct {
	Type, Format string
	Paths        []string // as given to --path
	Dir          string   // where the uploaded files are, relative paths kept
}

// JobResult is what GitLab would show for the job, plus the driver's records.
type JobResult struct {
	Name  string
	ID    int
	Stage string

	Status         string // success, failed, canceled, skipped
	FailureReason  string // script_failure, runner_system_failure, job_execution_timeout
	AllowedFailure bool   // failed but allow_failure
	ScriptExitCode int    // from BUILD_EXIT_CODE_FILE on a build failure
	Error          string // the runner's error line ("exit code 3", ...)

	Log string // the job log as GitLab shows it (masked)
	// Trace is Log as the runner sends it when trace timestamps are on
	// (FF_TIMESTAMPS, default since 18.7): every line prefixed (TracePrefix,
	// ParseTrace). Empty when they are off.
	Trace     string
	SystemLog string // cleanup_exec output and runner-side notes, never in Log

	Stages   []string // stages passed to run_exec, in order
	Calls    []Call
	Duration time.Duration

	BuildsDir                         string // from config_exec
	ProjectDir                        string // CI_PROJECT_DIR
	ConcurrentID, ConcurrentProjectID int

	Artifacts []StoredArtifact
	// Dotenv holds the variables GitLab took from the job's dotenv report
	// (only with Config.GitLabDotenv).
	Dotenv []Variable
	// PayloadJSON is the JOB_RESPONSE_FILE content the job got.
	PayloadJSON []byte
}

// Succeeded reports whether the job passed.
func (r *JobResult) Succeeded() bool { return r.Status == StatusSuccess }

// Pipeline is a set of jobs run in stage order.
type Pipeline struct {
	ProjectPath string   // "group/project" (default "group/project")
	ProjectID   int      // default 42
	Ref         string   // default "master"
	Stages      []string // order; default: order of first appearance in Jobs
	Jobs        []Job

	// Files and SourceDir make up the commit every job checks out.
	Files     map[string]string
	SourceDir string

	// Variables are the top-level .gitlab-ci.yml variables (below job variables).
	Variables []Variable
	// ProjectVariables are the project's CI/CD settings (above dotenv).
	ProjectVariables []Variable
	// PipelineVariables are trigger/run-pipeline variables (highest).
	PipelineVariables []Variable
}

// PipelineResult holds the per-job results.
type PipelineResult struct {
	ID     int
	Status string // success or failed
	Jobs   map[string]*JobResult
	Order  []string // job names in the order they were handled
}
