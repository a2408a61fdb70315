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
)

// RunnerVersions are the modelled versions, oldest first, for tests that
// run ferry under each.
var RunnerVersions = []string{Runner16, Runner17, Runner18}

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
