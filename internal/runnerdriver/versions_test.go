package runnerdriver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The runner's behaviour by version ("Newer runners" in the shared runner
// protocol facts), each through the real ferry binary.

func versionDriver(t *testing.T, version string, mod func(*Config)) *Driver {
	t.Helper()
	return newDriver(t, func(c *Config) {
		c.RunnerVersion = version
		if mod != nil {
			mod(c)
		}
	})
}

func TestParseRunnerVersion(t *testing.T) {
	for in, want := range map[string]runnerVersion{
		"16.11.4": {16, 11}, "17.9.0": {17, 9}, "v18.6.6": {18, 6}, "19.3.0~beta.1": {19, 3},
		"17.10rc1": {17, 10}, "": {16, 11}, "junk": {16, 11}, "17.": {16, 11},
	} {
		if got := parseRunnerVersion(in); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
	v := parseRunnerVersion("17.9.0")
	if !v.exitCodeFile() || !v.gitlabEnvLines() || !v.afterScriptCanFail() || v.scriptName() != "script" {
		t.Errorf("17.9: %+v", v)
	}
	v = parseRunnerVersion("17.8.1")
	if v.exitCodeFile() || !v.gitlabEnvLines() {
		t.Errorf("17.8: %+v", v)
	}
}

// TestExitCodeByVersion: `exit 42` is reported as 42 by 17.9+ (the
// exit-code file), as 1 before; the stage name is build_script on every
// version; script files lose their extension in 17.4.
func TestExitCodeByVersion(t *testing.T) {
	for _, ver := range RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			v := parseRunnerVersion(ver)
			r := versionDriver(t, ver, nil).RunJob(ctxT(t), Job{Name: "fail", Script: []string{"exit 42"}})
			requireStatus(t, r, StatusFailed)
			want := 1
			if v.exitCodeFile() {
				want = 42
			}
			if r.FailureReason != ReasonScriptFailure || r.ScriptExitCode != want {
				t.Errorf("%s %d, want %s %d", r.FailureReason, r.ScriptExitCode, ReasonScriptFailure, want)
			}
			if r.Stages[2] != StageBuildScript {
				t.Errorf("stages %v: the user script is build_script up to 19.3", r.Stages)
			}
			for _, c := range r.Calls {
				if c.Kind == "run" {
					if got := filepath.Base(c.Args[len(c.Args)-2]); got != v.scriptName() {
						t.Errorf("script file %s, want %s", got, v.scriptName())
					}
				}
			}
		})
	}
}

// fakeExecutor is a stand-in for ferry that does what body says for
// run_exec and nothing else: it tests the driver's model of the runner.
func fakeExecutor(t *testing.T, body string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "fake-executor")
	script := "#!/usr/bin/env bash\nsub=$1\nstage=${@: -1}\n[ \"$sub\" = run ] || exit 0\n" + body + "\n"
	if err := os.WriteFile(f, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestExitCodeFileModel: 17.9+ keeps one exit-code file per job, read on
// every build failure (a code an earlier stage left is reported again) and
// an unparsable first line is a system failure.
func TestExitCodeFileModel(t *testing.T) {
	stale := fakeExecutor(t, `case $stage in
  get_sources) echo 42 > "$BUILD_EXIT_CODE_FILE" ;;
  build_script) exit 1 ;;
esac`)
	garbage := fakeExecutor(t, `[ "$stage" = build_script ] || exit 0
echo "exit code: 3" > "$BUILD_EXIT_CODE_FILE"; exit 1`)
	for _, ver := range RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			newer := parseRunnerVersion(ver).exitCodeFile()
			r := versionDriver(t, ver, func(c *Config) { c.FerryBinary = stale; c.NoConfigExec = true }).
				RunJob(ctxT(t), Job{Name: "stale", Script: []string{"true"}})
			want := 1
			if newer {
				want = 42 // what the runner really does with a stale file
			}
			if r.FailureReason != ReasonScriptFailure || r.ScriptExitCode != want {
				t.Errorf("stale code: %s %d, want %s %d", r.FailureReason, r.ScriptExitCode, ReasonScriptFailure, want)
			}
			r = versionDriver(t, ver, func(c *Config) { c.FerryBinary = garbage; c.NoConfigExec = true }).
				RunJob(ctxT(t), Job{Name: "garbage", Script: []string{"true"}})
			wantReason := ReasonScriptFailure
			if newer {
				wantReason = ReasonSystemFailure
			}
			if r.FailureReason != wantReason {
				t.Errorf("unparsable exit-code file: %s (%s), want %s", r.FailureReason, r.Error, wantReason)
			}
		})
	}
}

// TestGitlabEnvByVersion: 17.7+ reads GITLAB_ENV line by line and its
// prepare_script deletes a file an earlier job left; ferry's own lines (the
// per-job bin dir in front of a job-defined PATH) are there for every stage
// anyway, because ferry writes them before each one.
func TestGitlabEnvByVersion(t *testing.T) {
	for _, ver := range RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			newer := parseRunnerVersion(ver).gitlabEnvLines()
			d := versionDriver(t, ver, nil)
			first := d.RunJob(ctxT(t), Job{Name: "first", Script: []string{"true"}})
			requireStatus(t, first, StatusSuccess)
			// A job killed before cleanup_file_variables left this behind.
			tmp := first.ProjectDir + ".tmp"
			os.MkdirAll(tmp, 0o755)
			os.WriteFile(filepath.Join(tmp, "gitlab_runner_env"), []byte("STALE=left-over\n"), 0o644)
			r := d.RunJob(ctxT(t), Job{Name: "second",
				Variables: []Variable{{Key: "PATH", Value: "/usr/local/bin:/usr/bin:/bin", Public: true}},
				Script: []string{
					`echo "STALE=[${STALE-unset}]"`,
					`echo "PATH=[$PATH]"`,
					`echo 'QUOTED="a b"' >> "$GITLAB_ENV"`,
				},
				Steps: []Step{{Name: "later", Script: []string{`echo "QUOTED=[$QUOTED] PATH=[$PATH]"`}}},
			})
			requireStatus(t, r, StatusSuccess)
			if r.ProjectDir != first.ProjectDir {
				t.Fatalf("project dirs differ: %s %s", r.ProjectDir, first.ProjectDir)
			}
			log := StripANSI(r.Log)
			wantStale, wantQuoted := "STALE=[left-over]", "QUOTED=[a b]"
			if newer {
				wantStale, wantQuoted = "STALE=[unset]", `QUOTED=["a b"]`
			}
			for _, want := range []string{wantStale, wantQuoted, "/bin:/usr/local/bin:/usr/bin:/bin]"} {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
			if n := strings.Count(log, "/jobs/"); n < 2 {
				t.Errorf("ferry's bin dir is not first on PATH in both stages (%d):\n%s", n, log)
			}
		})
	}
}

// TestAfterScriptIgnoreErrorsByVersion: AFTER_SCRIPT_IGNORE_ERRORS=false
// makes a failing after_script fail the job on 17.3+, with its exit code.
func TestAfterScriptIgnoreErrorsByVersion(t *testing.T) {
	for _, ver := range RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			v := parseRunnerVersion(ver)
			d := versionDriver(t, ver, nil)
			job := Job{Name: "after", Script: []string{"echo main-ok"}, AfterScript: []string{"exit 5"},
				Artifacts: []Artifact{{Name: "a", Paths: []string{"README.md"}, When: "always"}}}
			requireStatus(t, d.RunJob(ctxT(t), job), StatusSuccess)
			job.Variables = []Variable{{Key: "AFTER_SCRIPT_IGNORE_ERRORS", Value: "false", Public: true}}
			r := d.RunJob(ctxT(t), job)
			if !v.afterScriptCanFail() {
				requireStatus(t, r, StatusSuccess)
				return
			}
			requireStatus(t, r, StatusFailed)
			if r.FailureReason != ReasonScriptFailure || r.ScriptExitCode != 5 {
				t.Errorf("%s %d, want script_failure 5", r.FailureReason, r.ScriptExitCode)
			}
			if !strings.Contains(strings.Join(r.Stages, " "), StageUploadOnFailure) {
				t.Errorf("stages %v: the failure uploads should run", r.Stages)
			}
		})
	}
}

// TestGetSourcesAttempts: GET_SOURCES_ATTEMPTS runs get_sources again after
// a failure (here the pre_get_sources_script hook failing twice).
func TestGetSourcesAttempts(t *testing.T) {
	hook := []string{`n=$(cat "$CI_PROJECT_DIR.tmp/attempts" 2>/dev/null || echo 0); echo $((n+1)) > "$CI_PROJECT_DIR.tmp/attempts"; echo "attempt $((n+1))"; [ "$n" -ge 2 ] || exit 42`}
	for _, ver := range RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			d := versionDriver(t, ver, nil)
			r := d.RunJob(ctxT(t), Job{Name: "flaky", PreGetSourcesScript: hook, Script: []string{"echo built"},
				Variables: []Variable{{Key: "GET_SOURCES_ATTEMPTS", Value: "3", Public: true}}})
			requireStatus(t, r, StatusSuccess)
			if n := strings.Count(strings.Join(r.Stages, " "), StageGetSources); n != 3 {
				t.Errorf("get_sources ran %d times, want 3: %v", n, r.Stages)
			}
			if log := StripANSI(r.Log); !strings.Contains(log, "attempt 3") || !strings.Contains(log, "built") {
				t.Errorf("log:\n%s", log)
			}
			r = d.RunJob(ctxT(t), Job{Name: "once", PreGetSourcesScript: []string{"exit 42"}, Script: []string{"echo built"}})
			requireStatus(t, r, StatusFailed)
			if n := strings.Count(strings.Join(r.Stages, " "), StageGetSources); n != 1 {
				t.Errorf("without GET_SOURCES_ATTEMPTS get_sources ran %d times", n)
			}
		})
	}
}
