// Package jobenv reads what gitlab-runner gives a custom executor: its process
// environment (CUSTOM_ENV_* job variables, exit codes, file paths) and the job
// payload in JOB_RESPONSE_FILE.
package jobenv

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// The runner prefixes every job variable with this in the executor's environment.
const customEnvPrefix = "CUSTOM_ENV_"

// Env is the runner's process environment as a custom executor sees it.
type Env struct {
	// BuildFailureExitCode and SystemFailureExitCode are the exit codes the
	// runner asked for; 0 when the variable is missing (see Missing).
	BuildFailureExitCode  int
	SystemFailureExitCode int
	// BuildExitCodeFile receives the script's own exit code on a build failure
	// (run stage only; older runners do not set it).
	BuildExitCodeFile string
	// JobResponseFile is the path of the job payload.
	JobResponseFile string

	process map[string]string // the whole environment, for Getenv
	vars    map[string]string // job variables, without the prefix

	ident       *Identity // cached by Identity
	identServer string

	projectID    int64 // cached by ProjectID
	projectIDErr error
	projectIDSet bool
}

// FromEnviron parses an environment in os.Environ form. Malformed exit codes
// are kept as 0 and reported by Missing, which names them.
func FromEnviron(environ []string) *Env {
	e := &Env{process: map[string]string{}, vars: map[string]string{}}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		e.process[k] = v
		if name, ok := strings.CutPrefix(k, customEnvPrefix); ok && name != "" {
			e.vars[name] = v
		}
	}
	e.BuildFailureExitCode, _ = strconv.Atoi(e.process["BUILD_FAILURE_EXIT_CODE"])
	e.SystemFailureExitCode, _ = strconv.Atoi(e.process["SYSTEM_FAILURE_EXIT_CODE"])
	e.BuildExitCodeFile = e.process["BUILD_EXIT_CODE_FILE"]
	e.JobResponseFile = e.process["JOB_RESPONSE_FILE"]
	return e
}

// FromOS is FromEnviron(os.Environ()).
func FromOS() *Env { return FromEnviron(os.Environ()) }

// Getenv returns a variable of the runner's process environment.
func (e *Env) Getenv(name string) string { return e.process[name] }

// LookupEnv is Getenv with a presence flag.
func (e *Env) LookupEnv(name string) (string, bool) {
	v, ok := e.process[name]
	return v, ok
}

// JobVar returns the job variable name (from CUSTOM_ENV_<name>).
func (e *Env) JobVar(name string) (string, bool) {
	v, ok := e.vars[name]
	return v, ok
}

// JobVars returns a copy of all job variables.
func (e *Env) JobVars() map[string]string {
	m := make(map[string]string, len(e.vars))
	for k, v := range e.vars {
		m[k] = v
	}
	return m
}

// Missing returns the names, sorted, of the runner variables in need that are
// absent or (for exit codes) not a positive number. need holds process
// variable names such as "BUILD_FAILURE_EXIT_CODE" or "JOB_RESPONSE_FILE".
func (e *Env) Missing(need ...string) []string {
	var out []string
	for _, n := range need {
		v, ok := e.process[n]
		switch {
		case !ok || v == "":
			out = append(out, n)
		case strings.HasSuffix(n, "_EXIT_CODE"):
			if c, err := strconv.Atoi(v); err != nil || c <= 0 || c > 255 {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// RunnerVars are what every stage after config needs from the runner. The
// job's identity is not among them: it comes from JOB_RESPONSE_FILE (see
// Identity), never from a CUSTOM_ENV_* value the job could have set.
var RunnerVars = []string{
	"BUILD_FAILURE_EXIT_CODE",
	"SYSTEM_FAILURE_EXIT_CODE",
	"JOB_RESPONSE_FILE",
}

// RequireRunner returns an error naming every missing runner variable: ferry
// was most likely started by hand, outside a runner.
func (e *Env) RequireRunner() error {
	if m := e.Missing(RunnerVars...); len(m) > 0 {
		return fmt.Errorf("ferry: not started by gitlab-runner (custom executor): missing or invalid %s", strings.Join(m, ", "))
	}
	return nil
}

// JobResponse is the job payload from GitLab (JOB_RESPONSE_FILE). Only the
// fields ferry uses are decoded.
type JobResponse struct {
	ID           int64        `json:"id"`
	Token        string       `json:"token"`
	JobInfo      JobInfo      `json:"job_info"`
	GitInfo      GitInfo      `json:"git_info"`
	RunnerInfo   RunnerInfo   `json:"runner_info"`
	Variables    []Variable   `json:"variables"`
	Steps        []Step       `json:"steps"`
	Artifacts    []Artifact   `json:"artifacts"`
	Dependencies []Dependency `json:"dependencies"`
}

// JobInfo describes the job.
type JobInfo struct {
	Name        string `json:"name"`
	Stage       string `json:"stage"`
	ProjectID   int64  `json:"project_id"`
	ProjectName string `json:"project_name"`
	// PipelineID is sent by runners 19.0+ (0 before: CI_PIPELINE_ID, a
	// variable the job can set, is all there is).
	PipelineID int64 `json:"pipeline_id"`
}

// GitInfo describes the commit.
type GitInfo struct {
	RepoURL   string `json:"repo_url"`
	Ref       string `json:"ref"`
	Sha       string `json:"sha"`
	BeforeSha string `json:"before_sha"`
	RefType   string `json:"ref_type"`
}

// RunnerInfo carries the job timeout in seconds.
type RunnerInfo struct {
	Timeout int64 `json:"timeout"`
}

// Variable is a job variable as GitLab sends it.
type Variable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
	Raw    bool   `json:"raw"`
}

// Step is one script step (script, after_script, ...).
type Step struct {
	Name         string   `json:"name"`
	Script       []string `json:"script"`
	Timeout      int64    `json:"timeout"`
	When         string   `json:"when"`
	AllowFailure bool     `json:"allow_failure"`
}

// Artifact is one artifacts entry (reports included).
type Artifact struct {
	Name           string   `json:"name"`
	Paths          []string `json:"paths"`
	When           string   `json:"when"`
	ArtifactType   string   `json:"artifact_type"`
	ArtifactFormat string   `json:"artifact_format"`
	ExpireIn       string   `json:"expire_in"`
}

// Dependency is a job whose artifacts this job receives.
type Dependency struct {
	ID    int64  `json:"id"`
	Token string `json:"token"`
	Name  string `json:"name"`
}

// ReadJobResponse decodes a payload file. The error names the file.
func ReadJobResponse(path string) (*JobResponse, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ferry: job payload JOB_RESPONSE_FILE: %w", err)
	}
	var jr JobResponse
	if err := json.Unmarshal(b, &jr); err != nil {
		return nil, fmt.Errorf("ferry: job payload JOB_RESPONSE_FILE %s: %w", path, err)
	}
	return &jr, nil
}

// Payload reads the job payload named by JOB_RESPONSE_FILE.
func (e *Env) Payload() (*JobResponse, error) {
	if e.JobResponseFile == "" {
		return nil, fmt.Errorf("ferry: JOB_RESPONSE_FILE is not set")
	}
	jr, err := ReadJobResponse(e.JobResponseFile)
	if err == nil && !e.projectIDSet {
		// The whole payload is decoded: ProjectID need not read it again.
		e.projectID, e.projectIDSet = jr.JobInfo.ProjectID, true
	}
	return jr, err
}

// ProjectID is the payload's job_info.project_id (ReadProjectID), read once
// per process: config, the sandbox's policy and its build dirs all ask.
func (e *Env) ProjectID() (int64, error) {
	if !e.projectIDSet {
		if e.JobResponseFile == "" {
			e.projectIDErr = fmt.Errorf("ferry: JOB_RESPONSE_FILE is not set")
		} else {
			e.projectID, e.projectIDErr = ReadProjectID(e.JobResponseFile)
		}
		e.projectIDSet = true
	}
	return e.projectID, e.projectIDErr
}

// MaskedValues returns the values of the payload's masked variables: the
// runner masks them in the log, ferry masks their encoded forms too.
func (jr *JobResponse) MaskedValues() []string {
	var out []string
	for _, v := range jr.Variables {
		if v.Masked && v.Value != "" {
			out = append(out, v.Value)
		}
	}
	return out
}

// Variable returns the payload variable key (the last one wins, as in GitLab).
func (jr *JobResponse) Variable(key string) (Variable, bool) {
	for i := len(jr.Variables) - 1; i >= 0; i-- {
		if jr.Variables[i].Key == key {
			return jr.Variables[i], true
		}
	}
	return Variable{}, false
}
