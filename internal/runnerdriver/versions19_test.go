package runnerdriver

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
)

// The 18.7 to 19.3 changes (shared runner-protocol facts, "18.7 to 19.3 in
// detail"), modelled by version and run through the real ferry binary.

func TestParseRunnerVersion19(t *testing.T) {
	v := parseRunnerVersion(Runner19)
	if !v.timestampsByDefault() || !v.payload19() || !v.prepareTimeout() || !v.getSourcesTimeout() ||
		!v.subshellBody() || !v.gitConfigGlobal() || !v.cleanupExportsAll() {
		t.Errorf("19.3: %+v misses a change", v)
	}
	for _, old := range []string{Runner16, Runner17, Runner18} {
		v := parseRunnerVersion(old)
		if v.timestampsByDefault() || v.payloadInputs() || v.payload19() || v.prepareTimeout() ||
			v.getSourcesTimeout() || v.subshellBody() || v.gitConfigGlobal() || v.cleanupExportsAll() {
			t.Errorf("%s models a 18.7+ change", old)
		}
	}
	if parseRunnerVersion("19.0.1").subshellBody() || !parseRunnerVersion("19.0.1").prepareTimeout() {
		t.Error("19.0: prepare_timeout but not yet the subshell body")
	}
	if DefaultRunnerVersion != Runner19 {
		t.Errorf("default %s, want %s", DefaultRunnerVersion, Runner19)
	}
}

// TestTraceTimestampsByVersion: 18.7+ prefixes every trace line with a
// timestamp unless FF_TIMESTAMPS=false; 17.0 to 18.6 only with
// FF_TIMESTAMPS=true. Stripping the prefixes gives the log back.
func TestTraceTimestampsByVersion(t *testing.T) {
	for _, ver := range RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			v := parseRunnerVersion(ver)
			d := versionDriver(t, ver, nil)
			r := d.RunJob(ctxT(t), Job{Name: "ts", Script: []string{`printf 'one\ntwo\n'`}})
			requireStatus(t, r, StatusSuccess)
			if got := r.Trace != ""; got != v.timestampsByDefault() {
				t.Fatalf("trace timestamps %v, want %v", got, v.timestampsByDefault())
			}
			if r.Trace != "" {
				log, err := ParseTrace(r.Trace)
				if err != nil {
					t.Fatal(err)
				}
				if log != r.Log {
					t.Errorf("trace without prefixes differs from the log:\n%q\n%q", log, r.Log)
				}
			}
			for _, ff := range []string{"true", "false"} {
				r := d.RunJob(ctxT(t), Job{Name: "ff", Script: []string{"echo x"}, Variables: []Variable{{Key: "FF_TIMESTAMPS", Value: ff}}})
				requireStatus(t, r, StatusSuccess)
				want := ff == "true" && v.timestampsFlag()
				if got := r.Trace != ""; got != want {
					t.Errorf("FF_TIMESTAMPS=%s: timestamps %v, want %v", ff, got, want)
				}
			}
		})
	}
}

// sectionMarker finds GitLab's section markers in a line.
var sectionMarker = regexp.MustCompile("\x1b\\[0Ksection_(start|end):[0-9]+:[a-z0-9_.-]+(\\[[^\\]]*\\])?\r\x1b\\[0K")

// TestFerryLogReadsRightWithTimestamps: under 19.3 every line ferry and the
// job print carries the runner's prefix; every section marker (ferry's and
// the runner's) starts its line right after the prefix, or right after the
// marker before it (the runner's section_end has no newline); ferry's
// one-line error is one prefixed line; multi-line output is one prefix a line.
func TestFerryLogReadsRightWithTimestamps(t *testing.T) {
	d := versionDriver(t, Runner19, nil)
	r := d.RunJob(ctxT(t), Job{Name: "ts", Script: []string{
		`printf 'multi-1\nmulti-2\nmulti-3\n'`,
		`printf 'IMAGE=x\n\nTAG=y\n' > docker.env`,
	}, AfterScript: []string{"echo after"}, Artifacts: []Artifact{DotenvReport("docker.env")}})
	if r.Status != StatusFailed {
		t.Fatalf("the invalid dotenv report did not fail the job:\n%s", StripANSI(r.Log))
	}
	if r.Trace == "" {
		t.Fatal("no timestamps under 19.3")
	}
	if _, err := ParseTrace(r.Trace); err != nil {
		t.Fatal(err)
	}
	sections := 0
	for i, line := range strings.SplitAfter(r.Trace, "\n") {
		if line == "" {
			continue
		}
		body := line[len(TracePrefix.FindString(line)):]
		for _, m := range sectionMarker.FindAllStringIndex(body, -1) {
			sections++
			if m[0] != 0 && !sectionMarker.MatchString(body[:m[0]]) {
				t.Errorf("trace line %d: section marker in the middle of a line: %q", i+1, line)
			}
			if m[0] != 0 && !strings.HasSuffix(body[:m[0]], "\r\x1b[0K") {
				t.Errorf("trace line %d: text before a section marker: %q", i+1, line)
			}
		}
		if strings.Contains(body, "multi-") && !strings.Contains(body, "$ printf") && !regexp.MustCompile(`^multi-[123]\n$`).MatchString(body) {
			t.Errorf("trace line %d: multi-line output not one prefixed line each: %q", i+1, line)
		}
	}
	if sections < 8 {
		t.Errorf("only %d section markers in the trace:\n%s", sections, StripANSI(r.Log))
	}
	for _, want := range []string{"section_start:", "prepare_ferry"} {
		if !strings.Contains(r.Trace, want) {
			t.Errorf("trace lacks %q", want)
		}
	}
	// ferry's one-line error: one whole prefixed line, starting the line.
	found := false
	for i, line := range strings.SplitAfter(r.Trace, "\n") {
		body := line[len(TracePrefix.FindString(line)):]
		if strings.Contains(body, "docker.env:2: blank line") {
			found = true
			if !regexp.MustCompile("^(\x1b\\[[0-9;]*m)*ferry: [^\r\x1b]*docker.env:2: blank line[^\r]*\n$").MatchString(body) {
				t.Errorf("trace line %d: ferry's error is not one line of its own: %q", i+1, line)
			}
		}
	}
	if !found {
		t.Errorf("ferry's dotenv error is not in the trace:\n%s", StripANSI(r.Log))
	}
}

// TestBashBody19: the 19.1 body `(trap 'exit 1' TERM; eval '...') < /dev/null`
// (header `trap 'exit 1' TERM`), the old `: | eval` before 19.1 or with
// FF_USE_LEGACY_BASH_EVAL; a script reading stdin gets end of file at once;
// a cancel and a timeout still end every process of the job through ferry.
func TestBashBody19(t *testing.T) {
	for _, ver := range RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			v := parseRunnerVersion(ver)
			d := versionDriver(t, ver, nil)
			jr := &jobRun{d: d, jc: &jobCtx{projectPath: "g/p", sha: strings.Repeat("a", 40)}, job: Job{}}
			script := jr.userScript([]string{"echo hi"})
			sub := strings.Contains(script, "\n(trap 'exit 1' TERM; eval $'") && strings.Contains(script, "') < /dev/null\n") &&
				strings.Contains(script, "\ntrap 'exit 1' TERM\n")
			old := strings.Contains(script, "\n: | eval $'") && strings.Contains(script, "\ntrap exit 1 TERM\n")
			if sub != v.subshellBody() || old == v.subshellBody() {
				t.Fatalf("body: subshell %v, legacy %v, want subshell %v:\n%s", sub, old, v.subshellBody(), script)
			}
			jr.job.Variables = []Variable{{Key: "FF_USE_LEGACY_BASH_EVAL", Value: "true"}}
			if s := jr.userScript([]string{"echo hi"}); !strings.Contains(s, "\n: | eval $'") {
				t.Errorf("FF_USE_LEGACY_BASH_EVAL=true: no legacy body:\n%s", s)
			}

			start := time.Now()
			r := d.RunJob(ctxT(t), Job{Name: "stdin", Script: []string{
				`cat > got-stdin; echo "stdin-bytes=$(wc -c < got-stdin)"`,
				`if read -r line; then echo "read-got=$line"; else echo read-eof; fi`,
			}, Timeout: time.Minute})
			requireStatus(t, r, StatusSuccess)
			log := StripANSI(r.Log)
			if !strings.Contains(log, "stdin-bytes=0") || !strings.Contains(log, "read-eof") {
				t.Errorf("stdin is not at end of file:\n%s", log)
			}
			if time.Since(start) > 50*time.Second {
				t.Errorf("reading stdin blocked")
			}

			for _, how := range []string{"cancel", "timeout"} {
				marker := fmt.Sprintf("ferry19mark%d", time.Now().UnixNano())
				job := Job{Name: how, Script: []string{
					fmt.Sprintf("(exec -a %s-bg sleep 1000) &", marker),
					fmt.Sprintf("(trap '' TERM; exec -a %s-deaf sleep 1000) &", marker),
					"echo started-" + marker,
					fmt.Sprintf("(exec -a %s-fg sleep 1000)", marker),
					"echo not-reached",
				}}
				if how == "cancel" {
					job.CancelOnLog = "started-" + marker
				} else {
					job.Timeout = 8 * time.Second
				}
				r := d.RunJob(ctxT(t), job)
				want := StatusCanceled
				if how == "timeout" {
					want = StatusFailed
					if r.FailureReason != ReasonTimeout {
						t.Errorf("timeout: reason %s, want %s", r.FailureReason, ReasonTimeout)
					}
				}
				requireStatus(t, r, want)
				var left []string
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
					if left = procsWith(marker); len(left) == 0 || time.Now().After(deadline) {
						break
					}
				}
				if len(left) > 0 {
					t.Errorf("%s: processes survived: %v", how, left)
				}
				if strings.Contains(r.Log, "not-reached") {
					t.Errorf("%s: the script went on", how)
				}
			}
		})
	}
}

// TestPayload19Fields: what the 18.7+ payloads add, by version, and
// pkg/jobenv still reads every version's payload.
func TestPayload19Fields(t *testing.T) {
	for _, ver := range RunnerVersions {
		t.Run(ver, func(t *testing.T) {
			v := parseRunnerVersion(ver)
			d := versionDriver(t, ver, nil)
			r := d.RunJob(ctxT(t), Job{Name: "payload", Script: []string{
				`echo "services=$CI_JOB_SERVICES"`,
			},
				Inputs:   map[string]any{"env": "prod"},
				Run:      []any{map[string]any{"name": "hello", "script": "echo hi"}},
				Services: []Service{{Name: "postgres:16", Alias: "db", Variables: []Variable{{Key: "POSTGRES_DB", Value: "ci"}}}},
			})
			requireStatus(t, r, StatusSuccess)
			var p map[string]any
			if err := json.Unmarshal(r.PayloadJSON, &p); err != nil {
				t.Fatal(err)
			}
			_, inputs := p["inputs"]
			_, run := p["run"]
			so, suspend := p["suspend_options"]
			features, _ := p["features"].(map[string]any)
			tracing, hasTracing := features["tracing"]
			info, _ := p["job_info"].(map[string]any)
			_, pid := info["pipeline_id"]
			svc := p["services"].([]any)[0].(map[string]any)
			_, svcVars := svc["variables"]
			if inputs != v.payloadInputs() || run != v.atLeast(18, 9) || suspend != v.payload19() ||
				hasTracing != v.payload19() || pid != v.payload19() || svcVars != v.payload19() {
				t.Errorf("fields inputs=%v run=%v suspend_options=%v tracing=%v pipeline_id=%v services[].variables=%v",
					inputs, run, suspend, hasTracing, pid, svcVars)
			}
			if v.payload19() && (tracing != nil || so == nil) {
				t.Errorf("tracing %v (want null), suspend_options %v (want {})", tracing, so)
			}
			if v.atLeast(18, 9) {
				if _, ok := p["run"].([]any); !ok {
					t.Errorf("run is %T, want an array", p["run"])
				}
			}
			log := StripANSI(r.Log)
			if !strings.Contains(log, `services=[{"name":"postgres:16","alias":"db"`) ||
				strings.Contains(log, "POSTGRES_DB") != v.payload19() {
				t.Errorf("CI_JOB_SERVICES:\n%s", log)
			}
			// ferry read it (the job ran); so does pkg/jobenv directly.
			var jr jobenv.JobResponse
			if err := json.Unmarshal(r.PayloadJSON, &jr); err != nil || jr.ID != int64(r.ID) {
				t.Errorf("jobenv: %v (id %d, want %d)", err, jr.ID, r.ID)
			}
		})
	}
	// An empty run is left out, and tracing may be an object.
	d := versionDriver(t, Runner19, nil)
	r := d.RunJob(ctxT(t), Job{Name: "tracing", Script: []string{"true"}, Tracing: map[string]any{"endpoint": "https://otel.example.com"}})
	requireStatus(t, r, StatusSuccess)
	if strings.Contains(string(r.PayloadJSON), `"run"`) || !strings.Contains(string(r.PayloadJSON), `"endpoint": "https://otel.example.com"`) {
		t.Errorf("payload:\n%s", r.PayloadJSON)
	}
}

// TestGitConfigGlobal192: 19.2+ with FF_GIT_URLS_WITHOUT_TOKENS=true exports
// GIT_CONFIG_GLOBAL=<project dir>.tmp/.glr.gconf in every stage; under ferry
// `git config --global` then writes there.
func TestGitConfigGlobal192(t *testing.T) {
	for _, ver := range []string{Runner18, Runner19} {
		t.Run(ver, func(t *testing.T) {
			d := versionDriver(t, ver, nil)
			script := []string{`echo "gconf=${GIT_CONFIG_GLOBAL:-unset}"`}
			if parseRunnerVersion(ver).gitConfigGlobal() {
				// Before 19.2 this writes the runner user's ~/.gitconfig,
				// which ferry's sandbox keeps read-only.
				script = append(script, `git config --global ferry.test yes`, `git config --global --get ferry.test`)
			}
			r := d.RunJob(ctxT(t), Job{Name: "gconf", Script: script,
				Variables: []Variable{{Key: "FF_GIT_URLS_WITHOUT_TOKENS", Value: "true"}}})
			requireStatus(t, r, StatusSuccess)
			log := StripANSI(r.Log)
			want := "gconf=unset"
			if parseRunnerVersion(ver).gitConfigGlobal() {
				want = "gconf=" + r.ProjectDir + ".tmp/.glr.gconf"
			}
			if !strings.Contains(log, want) {
				t.Errorf("want %q in:\n%s", want, log)
			}
		})
	}
}

// TestCleanupFileVariables193: 19.3's cleanup_file_variables exports every
// variable (File variables written again, then removed) and rejects the
// server's git credentials; before, it only removes files.
func TestCleanupFileVariables193(t *testing.T) {
	for _, ver := range []string{Runner18, Runner19} {
		t.Run(ver, func(t *testing.T) {
			d := versionDriver(t, ver, nil)
			secret := "cfv-secret-" + fmt.Sprint(time.Now().UnixNano())
			jr := &jobRun{d: d, jc: &jobCtx{projectPath: "g/p", sha: strings.Repeat("a", 40)},
				job: Job{Variables: []Variable{{Key: "CFV_SECRET", Value: secret, Masked: true}, {Key: "CFV_FILE", Value: "file-" + secret, File: true}}}}
			jr.projectDir = "/builds/g/p"
			s := jr.cleanupFileVariablesScript()
			exports := strings.Contains(s, secret) && strings.Contains(s, "credential reject")
			if exports != parseRunnerVersion(ver).cleanupExportsAll() {
				t.Errorf("cleanup_file_variables exports every variable: %v:\n%s", exports, s)
			}
			r := d.RunJob(ctxT(t), Job{Name: "cfv", Script: []string{`test -f "$CFV_FILE"`},
				Variables: jr.job.Variables})
			requireStatus(t, r, StatusSuccess)
			if r.Stages[len(r.Stages)-1] != StageCleanupFileVariables {
				t.Errorf("stages %v", r.Stages)
			}
			if matches, _ := filepath.Glob(r.ProjectDir + ".tmp/CFV_FILE"); len(matches) > 0 {
				t.Errorf("the File variable outlived cleanup_file_variables")
			}
			if strings.Contains(r.Log, secret) {
				t.Errorf("secret in the log")
			}
		})
	}
}

// TestPrepareTimeout190: 19.0+ bounds config, prepare and the prepare_script
// call by prepare_timeout: the call in flight gets SIGTERM (then SIGKILL
// after the graceful timeout), the job fails with job_execution_timeout,
// cleanup_exec still runs. Before 19.0 the setting does not exist.
func TestPrepareTimeout190(t *testing.T) {
	dir := t.TempDir()
	// prepare traps SIGTERM and records it, then exits like an executor that
	// cleaned up; prepare_script (run) sleeps past the bound.
	exe := writeExecutor(t, `
case $1 in
config) echo '{"builds_dir":"`+dir+`/b"}';;
prepare) if [ -e `+dir+`/slow-prepare ]; then trap 'echo got-term >> `+dir+`/terms; exit 2' TERM; sleep 6 & wait; fi;;
run) [ "${@: -1}" = prepare_script ] && [ -e `+dir+`/slow-script ] && { trap 'echo script-term >> `+dir+`/terms; exit 1' TERM; sleep 30 & wait; }
     bash "${@: -2:1}";;
cleanup) echo cleaned >> `+dir+`/cleanups;;
esac`)
	for _, tc := range []struct{ ver, slow string }{{Runner18, "slow-prepare"}, {Runner19, "slow-prepare"}, {Runner19, "slow-script"}} {
		t.Run(tc.ver+"/"+tc.slow, func(t *testing.T) {
			for _, f := range []string{"slow-prepare", "slow-script", "terms", "cleanups"} {
				os.Remove(filepath.Join(dir, f))
			}
			os.WriteFile(filepath.Join(dir, tc.slow), nil, 0o644)
			base := t.TempDir()
			d, err := New(Config{FerryBinary: exe, BaseDir: base, Env: hostEnv(base), RunnerVersion: tc.ver,
				PrepareTimeout: 2 * time.Second, GracefulKillTimeout: 3 * time.Second, PrepareRetryDelay: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := d.RunJob(ctxT(t), Job{Name: "pt", Script: []string{"echo ran"}, Timeout: 40 * time.Second})
			if tc.ver == Runner18 {
				// No prepare_timeout: prepare ends its sleep, the job runs.
				requireStatus(t, r, StatusSuccess)
				return
			}
			if r.Status != StatusFailed || r.FailureReason != ReasonTimeout {
				t.Fatalf("%s %s (%s), want failed %s\n%s", r.Status, r.FailureReason, r.Error, ReasonTimeout, callsString(r.Calls))
			}
			if el := time.Since(start); el > 15*time.Second {
				t.Errorf("took %v: prepare_timeout 2s", el)
			}
			terms, _ := os.ReadFile(filepath.Join(dir, "terms"))
			if len(terms) == 0 {
				t.Errorf("the call in flight got no SIGTERM")
			}
			if last := r.Calls[len(r.Calls)-1]; last.Kind != "cleanup" {
				t.Errorf("last call %s, want cleanup", last.Kind)
			}
			if strings.Contains(r.Log, "ran") && strings.Contains(StripANSI(r.Log), "\nran\n") {
				t.Error("the script ran after prepare timed out")
			}
			for _, c := range r.Calls {
				// cleanup_file_variables follows a failed prepare_script as
				// after any failure of it.
				if c.Kind == "run" && c.Stage != StagePrepare && c.Stage != StageCleanupFileVariables {
					t.Errorf("stage %s ran after prepare timed out", c.Stage)
				}
			}
		})
	}
}

// TestGetSourcesTimeout191: 19.1+ bounds get_sources, all attempts together.
func TestGetSourcesTimeout191(t *testing.T) {
	exe := fakeExecutor(t, `[ "$stage" = get_sources ] && { sleep 30 & wait; }; exit 0`)
	for _, ver := range []string{Runner18, Runner19} {
		t.Run(ver, func(t *testing.T) {
			d := versionDriver(t, ver, func(c *Config) {
				c.FerryBinary, c.NoConfigExec = exe, true
				c.GetSourcesTimeout = 2 * time.Second
			})
			start := time.Now()
			r := d.RunJob(ctxT(t), Job{Name: "gs", Script: []string{"true"}, Timeout: 5 * time.Second,
				Variables: []Variable{{Key: "GET_SOURCES_ATTEMPTS", Value: "3"}}})
			if r.Status != StatusFailed || r.FailureReason != ReasonTimeout {
				t.Fatalf("%s %s, want failed %s", r.Status, r.FailureReason, ReasonTimeout)
			}
			n := strings.Count(strings.Join(r.Stages, " "), StageGetSources)
			el := time.Since(start)
			if parseRunnerVersion(ver).getSourcesTimeout() {
				// The stage's own bound, before the 5s job timeout.
				if n != 1 || el > 4500*time.Millisecond || r.Error != "get_sources timed out" {
					t.Errorf("get_sources ran %d times, %v, %q", n, el, r.Error)
				}
			} else if el < 4500*time.Millisecond {
				t.Errorf("ended after %v, before the job timeout", el)
			}
		})
	}
}
