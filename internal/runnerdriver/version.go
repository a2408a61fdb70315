package runnerdriver

import (
	"strconv"
	"strings"
)

// Runner versions whose behaviour the driver models (shared runner-protocol
// facts, "Newer runners"): set Config.RunnerVersion to one of them, or to any
// other version; behaviour follows the version thresholds below.
const (
	Runner16 = "16.11.4" // observed: GITLAB_ENV sourced, build failures reported as exit code 1
	Runner17 = "17.11.4" // 17.3 after_script errors, 17.4 script files, 17.7 GITLAB_ENV, 17.9 exit-code file
	Runner18 = "18.6.6"  // as 17.11 for a custom executor
	// Runner19 is the default: 18.7 trace timestamps, 18.9/19.0 payload
	// fields, 19.0 prepare_timeout, 19.1 get_sources_timeout and the
	// subshell bash body, 19.2 GIT_CONFIG_GLOBAL, 19.3 cleanup_file_variables
	// exporting every variable (shared runner-protocol facts, "18.7 to 19.3 in
	// detail"; read from the runner's source, not observed).
	Runner19 = "19.3.0"
)

// RunnerVersions are the modelled versions, oldest first, for tests that
// run ferry under each.
var RunnerVersions = []string{Runner16, Runner17, Runner18, Runner19}

// DefaultRunnerVersion is the version a Config without RunnerVersion models,
// unless RunnerVersionVar names another.
const DefaultRunnerVersion = Runner19

// RunnerVersionVar, when set in the test process's environment, is the
// version of every driver whose Config leaves RunnerVersion empty: it runs
// a package's driver tests under another runner without editing them.
const RunnerVersionVar = "FERRY_RUNNER_VERSION"

// runnerVersion is a parsed major.minor.
type runnerVersion struct{ major, minor int }

// parseRunnerVersion reads "17.11.4" (a "v" prefix and suffixes after the
// patch are ignored); an unreadable version counts as 16.11, the observed one.
func parseRunnerVersion(s string) runnerVersion {
	parts := strings.SplitN(strings.TrimPrefix(strings.TrimSpace(s), "v"), ".", 3)
	if len(parts) < 2 {
		return runnerVersion{16, 11}
	}
	digits := strings.FieldsFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if len(digits) == 0 {
		return runnerVersion{16, 11}
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(digits[0])
	if err1 != nil || err2 != nil {
		return runnerVersion{16, 11}
	}
	return runnerVersion{major, minor}
}

func (v runnerVersion) atLeast(major, minor int) bool {
	return v.major > major || v.major == major && v.minor >= minor
}

// What changed for a custom executor, by version.

// exitCodeFile: 17.9+ sets BUILD_EXIT_CODE_FILE, one file for all run_exec
// calls of a job, and reads its first line whenever run_exec exits with
// BUILD_FAILURE_EXIT_CODE (an unparsable line is a system failure). Before,
// a build failure is reported as exit code 1.
func (v runnerVersion) exitCodeFile() bool { return v.atLeast(17, 9) }

// gitlabEnvLines: 17.7+ reads GITLAB_ENV line by line and prepare_script
// deletes the file; before, stage scripts source it with allexport.
func (v runnerVersion) gitlabEnvLines() bool { return v.atLeast(17, 7) }

// afterScriptCanFail: 17.3+ fails the job on a failing after_script when
// AFTER_SCRIPT_IGNORE_ERRORS is false.
func (v runnerVersion) afterScriptCanFail() bool { return v.atLeast(17, 3) }

// scriptExtension is the stage script file's name: "script.sh" before 17.4,
// "script" (no extension) since.
func (v runnerVersion) scriptName() string {
	if v.atLeast(17, 4) {
		return "script"
	}
	return "script.sh"
}

// timestampsByDefault: 18.7+ turns FF_TIMESTAMPS on by default; the runner
// then prefixes every job-log line it sends with a timestamp. 17.0 to 18.6
// honour FF_TIMESTAMPS=true set as a job variable.
func (v runnerVersion) timestampsByDefault() bool { return v.atLeast(18, 7) }
func (v runnerVersion) timestampsFlag() bool      { return v.atLeast(17, 0) }

// payloadInputs: 18.7+ payloads carry `inputs` (`{}`); 18.9+ sends `run` as
// an array of step objects, left out when empty.
func (v runnerVersion) payloadInputs() bool { return v.atLeast(18, 7) }

// payload19: 19.0+ payloads carry job_info.pipeline_id, features.tracing
// (object or null), suspend_options and services[].variables.
func (v runnerVersion) payload19() bool { return v.atLeast(19, 0) }

// prepareTimeout: 19.0+ bounds config_exec, prepare_exec and the
// prepare_script run_exec call (retries included) by prepare_timeout.
func (v runnerVersion) prepareTimeout() bool { return v.atLeast(19, 0) }

// getSourcesTimeout: 19.1+ bounds get_sources (all attempts) by
// get_sources_timeout.
func (v runnerVersion) getSourcesTimeout() bool { return v.atLeast(19, 1) }

// subshellBody: 19.1+ runs the bash body as
// `(trap 'exit 1' TERM; eval '...') < /dev/null` with the header trap
// `trap 'exit 1' TERM` (FF_USE_LEGACY_BASH_EVAL=true brings the old
// `: | eval '...'` back).
func (v runnerVersion) subshellBody() bool { return v.atLeast(19, 1) }

// gitConfigGlobal: 19.2+ exports GIT_CONFIG_GLOBAL=<runner temp>/.glr.gconf
// in every stage when FF_GIT_URLS_WITHOUT_TOKENS is true.
func (v runnerVersion) gitConfigGlobal() bool { return v.atLeast(19, 2) }

// cleanupExportsAll: 19.3+'s cleanup_file_variables exports every job
// variable and GITLAB_ENV, reads the file back and runs `git credential
// reject`; get_sources ends with the same best-effort reject.
func (v runnerVersion) cleanupExportsAll() bool { return v.atLeast(19, 3) }
