// Package stages implements ferry's four custom-executor stages (config,
// prepare, run, cleanup) and the registry through which features plug into
// them (hooks.go).
package stages

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"gitlab.com/ferry-ci/ferry/pkg/failure"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/pkg/version"
)

// DriverName is what the runner prints: "Using Custom executor with driver ferry <version>".
const DriverName = "ferry"

// ConfigOutput is the JSON config_exec prints.
type ConfigOutput struct {
	BuildsDir         string            `json:"builds_dir"`
	CacheDir          string            `json:"cache_dir"`
	BuildsDirIsShared bool              `json:"builds_dir_is_shared"`
	Hostname          string            `json:"hostname,omitempty"`
	Driver            Driver            `json:"driver"`
	JobEnv            map[string]string `json:"job_env,omitempty"`
	Shell             string            `json:"shell"`
}

// Driver names ferry in the job log.
type Driver struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Config computes config_exec's answer. With builds_dir_is_shared false the
// runner puts the project in <builds_dir>/<namespace>/<project>, so
// builds_dir itself must be unique per concurrent job of a project: ferry
// uses <builds-root>/<CI_RUNNER_SHORT_TOKEN>/<CI_CONCURRENT_PROJECT_ID>, the
// shell executor's layout.
func Config(env *jobenv.Env, o *Options) (*ConfigOutput, error) {
	if o.BuildsDir == "" || o.CacheDir == "" || o.StateDir == "" {
		return nil, fmt.Errorf("ferry: HOME is not set: give --builds-dir, --cache-dir and --state-dir")
	}
	token, _ := env.JobVar("CI_RUNNER_SHORT_TOKEN")
	if token == "" {
		token = "runner"
	}
	if !jobstate.PlainName(token) {
		return nil, fmt.Errorf("ferry: CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN %q is not usable as a directory name", token)
	}
	slot, name := "", ""
	for _, n := range []string{"CI_CONCURRENT_PROJECT_ID", "CI_CONCURRENT_ID"} {
		if v, ok := env.JobVar(n); ok && v != "" {
			slot, name = v, n
			break
		}
	}
	if slot == "" {
		return nil, fmt.Errorf("ferry: CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID and CUSTOM_ENV_CI_CONCURRENT_ID are not set: cannot give this job its own builds_dir")
	}
	if !jobstate.PlainName(slot) {
		return nil, fmt.Errorf("ferry: CUSTOM_ENV_%s %q is not usable as a directory name", name, slot)
	}
	builds, err := filepath.Abs(o.BuildsDir)
	if err != nil {
		return nil, fmt.Errorf("ferry: --builds-dir %s: %w", o.BuildsDir, err)
	}
	cache, err := filepath.Abs(o.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("ferry: --cache-dir %s: %w", o.CacheDir, err)
	}
	state, err := filepath.Abs(o.StateDir)
	if err != nil {
		return nil, fmt.Errorf("ferry: --state-dir %s: %w", o.StateDir, err)
	}
	if within(state, builds) {
		return nil, fmt.Errorf("ferry: --state-dir %s is inside --builds-dir %s: job state must stay out of the build directory", state, builds)
	}
	// The project's own level (the payload's project id, which a job
	// cannot set) keeps every directory the runner makes for a job below
	// one only this project uses, so the sandbox can let the job rewrite
	// its whole builds_dir (a clone removes and recreates the project
	// dir) and cache_dir without reaching another project's.
	buildsDir, cacheDir := filepath.Join(builds, token, slot), cache
	if pid := payloadProjectID(env); pid != "" {
		buildsDir, cacheDir = filepath.Join(builds, token, pid, slot), filepath.Join(cache, pid)
	}
	host, _ := os.Hostname()
	// Later calls get these in their process environment, so prepare, run
	// and cleanup agree on the state root (and the instance that names job
	// keys) even when only config_args names them. A job cannot set them:
	// its variables reach ferry only as CUSTOM_ENV_*. run's sandbox needs
	// the builds and cache roots too (what to hide).
	jobEnv := map[string]string{EnvName("state-dir"): state, JobBuildsDirVar: buildsDir,
		EnvName("builds-dir"): builds, EnvName("cache-dir"): cache}
	if o.ServerURL != "" {
		jobEnv[EnvName("server-url")] = o.ServerURL
	}
	return &ConfigOutput{
		BuildsDir:         buildsDir,
		CacheDir:          cacheDir,
		BuildsDirIsShared: false,
		Hostname:          host,
		Driver:            Driver{Name: DriverName, Version: version.Version},
		JobEnv:            jobEnv,
		Shell:             "bash",
	}, nil
}

// JobBuildsDirVar carries config's builds_dir to the later calls (job_env):
// the job's CI_PROJECT_DIR must lie inside it (checkProjectDir), so a
// `variables:` entry cannot point ferry's writes (GITLAB_ENV) and reads
// (dotenv reports) at another job's build directory.
const JobBuildsDirVar = "FERRY_JOB_BUILDS_DIR"

// checkProjectDir refuses a CUSTOM_ENV_CI_PROJECT_DIR outside the builds_dir
// config gave this job. Without config_exec (no job_env) there is nothing
// trusted to compare with, and the value is used as it is.
func checkProjectDir(env *jobenv.Env) error {
	pd, _ := env.JobVar("CI_PROJECT_DIR")
	bd := env.Getenv(JobBuildsDirVar)
	if pd == "" || bd == "" {
		return nil
	}
	if !filepath.IsAbs(pd) || !within(filepath.Clean(pd), filepath.Clean(bd)) || filepath.Clean(pd) == filepath.Clean(bd) {
		return failure.Build(fmt.Errorf("ferry: CUSTOM_ENV_CI_PROJECT_DIR %q is not inside this job's builds_dir %s (from config_exec): refused (a job variable cannot move the project directory)", pd, bd))
	}
	return nil
}

// payloadProjectID is the job payload's project id as a directory name, ""
// without a readable payload.
func payloadProjectID(env *jobenv.Env) string {
	id, err := env.ProjectID()
	if err != nil || id <= 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}

// WriteConfig runs Config and prints the JSON.
func WriteConfig(env *jobenv.Env, o *Options, w io.Writer) error {
	c, err := Config(env, o)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("ferry: config: write JSON: %w", err)
	}
	return nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (rel == "." || len(rel) < 3 || rel[:3] != "../")
}

// ExitCode maps an error to the runner's exit codes: a build failure to
// BUILD_FAILURE_EXIT_CODE, anything else to SYSTEM_FAILURE_EXIT_CODE.
func ExitCode(env *jobenv.Env, err error) int {
	if err == nil {
		return 0
	}
	if failure.IsBuild(err) {
		if env.BuildFailureExitCode > 0 {
			return env.BuildFailureExitCode
		}
		return 1
	}
	if env.SystemFailureExitCode > 0 {
		return env.SystemFailureExitCode
	}
	return 2
}
