package runnerdriver

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// ANSI sequences as the runner writes them (helpers/colors.go in gitlab-runner).
const (
	ansiReset     = "\033[0;m"
	ansiBoldRed   = "\033[31;1m"
	ansiBoldGreen = "\033[32;1m"
	ansiBoldCyan  = "\033[36;1m"
	ansiYellow    = "\033[0;33m"
	ansiClear     = "\033[0K"
)

// Stage names the runner passes to run_exec.
const (
	StagePrepare              = "prepare_script"
	StageGetSources           = "get_sources"
	StageDownloadArtifacts    = "download_artifacts"
	StageBuildScript          = "build_script"
	StageStepScript           = "step_script"
	StageAfterScript          = "after_script"
	StageUploadOnSuccess      = "upload_artifacts_on_success"
	StageUploadOnFailure      = "upload_artifacts_on_failure"
	StageCleanupFileVariables = "cleanup_file_variables"
)

// shellEscape quotes s for bash the way the runner's default (non-POSIX)
// escaper does: plain words stay as they are, anything else becomes an ANSI-C
// $'...' string in which control and non-ASCII bytes are written as escapes.
// The runner relies on this to put a whole stage script inside one `eval`.
func shellEscape(s string) string {
	if s == "" {
		return "''"
	}
	var b strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isWordByte(c):
			b.WriteByte(c)
		case c == '\a':
			b.WriteString(`\a`)
			quoted = true
		case c == '\b':
			b.WriteString(`\b`)
			quoted = true
		case c == '\t':
			b.WriteString(`\t`)
			quoted = true
		case c == '\n':
			b.WriteString(`\n`)
			quoted = true
		case c == '\v':
			b.WriteString(`\v`)
			quoted = true
		case c == '\f':
			b.WriteString(`\f`)
			quoted = true
		case c == '\r':
			b.WriteString(`\r`)
			quoted = true
		case c == '\'':
			b.WriteString(`\'`)
			quoted = true
		case c == '\\':
			b.WriteString(`\\`)
			quoted = true
		case c >= 0x20 && c < 0x7f:
			// Printable punctuation: literal inside $'...'.
			b.WriteByte(c)
			quoted = true
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
			quoted = true
		}
	}
	if quoted {
		return "$'" + b.String() + "'"
	}
	return b.String()
}

// isWordByte reports the bytes the runner leaves unquoted.
func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == ',' || c == '-' || c == '.' || c == '/' || c == '@' || c == '_'
}

// GitlabEnvMode selects how a stage script reads the GITLAB_ENV file.
type GitlabEnvMode int

const (
	// GitlabEnvByVersion (the zero value) follows Config.RunnerVersion.
	GitlabEnvByVersion GitlabEnvMode = iota
	// GitlabEnvAllexport sources the file with `set -o allexport`, as observed
	// with gitlab-runner 16.11 (lines are shell syntax: quotes are removed,
	// `$X` is expanded).
	GitlabEnvAllexport
	// GitlabEnvExportLines reads it with `while read -r line; do export "$line"; done`,
	// as runners 17.7+ do (each line is taken literally).
	GitlabEnvExportLines
)

// scriptWriter accumulates the body of a stage script, which Finish wraps in
// the runner's prologue and a single eval.
type scriptWriter struct {
	b      strings.Builder
	tmpDir string // <CI_PROJECT_DIR>.tmp
	envMod GitlabEnvMode
	// subshell is the 19.1+ body: `(trap 'exit 1' TERM; eval '...') < /dev/null`.
	subshell bool
	// gitConfigGlobal is exported after the variables when set (19.2+ with
	// FF_GIT_URLS_WITHOUT_TOKENS).
	gitConfigGlobal string
}

func (w *scriptWriter) line(s string)            { w.b.WriteString(s + "\n") }
func (w *scriptWriter) linef(f string, a ...any) { w.line(fmt.Sprintf(f, a...)) }
func (w *scriptWriter) command(name string, a ...string) {
	parts := []string{shellEscape(name)}
	for _, x := range a {
		parts = append(parts, shellEscape(x))
	}
	w.line(strings.Join(parts, " "))
}
func (w *scriptWriter) notice(s string)  { w.line("echo " + shellEscape(ansiBoldGreen+s+ansiReset)) }
func (w *scriptWriter) warning(s string) { w.line("echo " + shellEscape(ansiYellow+s+ansiReset)) }
func (w *scriptWriter) tmpFile(name string) string {
	return path.Join(w.tmpDir, name)
}

// variable writes the export of one job variable; a File variable is written
// to <tmp>/<KEY> and the path exported, exactly like the runner's bash writer.
func (w *scriptWriter) variable(v Variable) {
	if v.File {
		f := w.tmpFile(v.Key)
		w.linef("mkdir -p %q", w.tmpDir)
		w.linef("printf '%%s' %s > %q", shellEscape(v.Value), f)
		w.linef("export %s=%q", shellEscape(v.Key), f)
		return
	}
	w.linef("export %s=%s", shellEscape(v.Key), shellEscape(v.Value))
}

// exports writes every job variable, then GITLAB_ENV and the read of that file.
func (w *scriptWriter) exports(vars []Variable) {
	for _, v := range vars {
		w.variable(v)
	}
	if w.gitConfigGlobal != "" {
		w.variable(Variable{Key: "GIT_CONFIG_GLOBAL", Value: w.gitConfigGlobal})
	}
	envFile := w.tmpFile("gitlab_runner_env")
	w.variable(Variable{Key: "GITLAB_ENV", Value: envFile})
	w.linef("mkdir -p %q", w.tmpDir)
	w.linef("touch %q", envFile)
	switch w.envMod {
	case GitlabEnvExportLines:
		w.linef(`while read -r line; do export "$line"; done < %q`, envFile)
	default:
		w.line("set -o allexport")
		w.linef("source %q", envFile)
		w.line("set +o allexport")
	}
}

func (w *scriptWriter) sectionStart(id, header string, opts string) {
	w.line("printf '%b\\n' " + "section_start:$(date +%s):section_" + id + opts +
		"\r" + ansiClear + shellEscape(ansiBoldGreen+header+ansiReset))
}

func (w *scriptWriter) sectionEnd(id string) {
	w.line("printf '%b\\n' " + "section_end:$(date +%s):section_" + id + "\r" + ansiClear)
}

// commands writes the user's commands, each announced as `$ command` in bold
// green; with sections (FF_SCRIPT_SECTIONS) each one is wrapped in a section.
func (w *scriptWriter) commands(cmds []string, sections bool, prefix string) {
	for i, c := range cmds {
		c = strings.TrimSpace(c)
		if c == "" {
			w.line("echo")
			continue
		}
		first, rest, multi := strings.Cut(c, "\n")
		_ = rest
		header := "$ " + first
		if multi {
			header += " # collapsed multi-line command"
		}
		id := prefix + "_" + strconv.Itoa(i)
		if sections {
			w.sectionStart(id, header, "[hide_duration=true,collapsed=true]")
		} else {
			w.notice(header)
		}
		w.line(c)
		if sections {
			w.sectionEnd(id)
		}
	}
}

// finish wraps the body like the runner's BashWriter.Finish: shebang, the TERM
// trap, pipefail/errexit and one eval of the whole body: `: | eval $'...'`
// before 19.1 (the header trap `trap exit 1 TERM` also traps SIGHUP), and
// `(trap 'exit 1' TERM; eval $'...') < /dev/null` since (stdin at end of
// file, SIGTERM ends the subshell with 1).
func (w *scriptWriter) finish() string {
	var b strings.Builder
	b.WriteString("#!/usr/bin/env bash\n\n")
	if w.subshell {
		b.WriteString("trap 'exit 1' TERM\n\n")
	} else {
		b.WriteString("trap exit 1 TERM\n\n")
	}
	b.WriteString("if set -o | grep pipefail > /dev/null; then set -o pipefail; fi; set -o errexit\n")
	b.WriteString("set +o noclobber\n")
	if w.subshell {
		b.WriteString("(trap 'exit 1' TERM; eval " + shellEscape(w.b.String()) + ") < /dev/null\n")
	} else {
		b.WriteString(": | eval " + shellEscape(w.b.String()) + "\n")
	}
	b.WriteString("exit 0\n")
	return b.String()
}
