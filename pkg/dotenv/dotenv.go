// Package dotenv parses dotenv reports (`artifacts:reports:dotenv`) the way
// GitLab does (Ci::ParseDotenvArtifactService), so a file ferry accepts is a
// file GitLab accepts and means the same thing:
//
//   - every line is KEY=VALUE, split at the first '=', both sides trimmed of
//     ASCII white space (Ruby's String#strip: space, \t, \n, \v, \f, \r, NUL);
//   - a blank line or a '#' comment line rejects the whole file;
//   - keys match [A-Za-z0-9_]{1,255} (so `export KEY=1` is an invalid key);
//   - quotes are kept literally, nothing is unescaped, nothing is expanded;
//   - a duplicate key: the last value wins, at the first one's position;
//   - UTF-8, a leading byte order mark is dropped.
//
// Unlike GitLab, errors name the file and the line, and the size and count
// limits only warn (GitLab refuses the upload; ferry carries the report itself,
// so it can be kinder, but says that GitLab would not be).
//
// Lenient mode (an admin's opt-in) also skips blank lines and whole-line '#'
// comments; nothing else changes. ferry never expands values here: that is
// what keeps a host's environment out of a job (godotenv expands).
package dotenv

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// GitLab's self-managed defaults (ci_max_artifact_size_dotenv is 5 KiB,
// dotenv_variables limit 20; GitLab.com allows 50/100/150 by plan).
const (
	MaxBytes     = 5 * 1024
	MaxVariables = 20
	MaxKeyLength = 255
)

// Limits of the process environment every variable ends up in. Unlike
// GitLab's limits above (ferry only warns), these are refused: a report that
// breaks them would make every consumer fail to start its script
// ("argument list too long"), far from the producer that caused it.
const (
	// MaxEnvString is Linux's MAX_ARG_STRLEN (32 pages of 4 KiB): the
	// longest single environment string execve accepts, counting KEY=VALUE
	// and the terminating NUL.
	MaxEnvString = 128 << 10
	// MaxEnvTotal is ferry's budget for all of one report's variables. Linux
	// limits a whole environment (with the arguments) to ARG_MAX, a quarter
	// of the stack limit: 2 MiB with the usual 8 MiB stack. Half of that is
	// left to the job's own variables, which the runner's stage scripts
	// export as well.
	MaxEnvTotal = 1 << 20
)

// EnvSize is the bytes KEY=VALUE takes in a process environment, with its NUL.
func EnvSize(key, value string) int { return len(key) + 1 + len(value) + 1 }

// CheckEnvString says why key=value cannot be one environment string (too
// long for Linux), or returns nil.
func CheckEnvString(key, value string) error {
	if n := EnvSize(key, value); n > MaxEnvString {
		return fmt.Errorf("%s: the variable is %d bytes as an environment string (%s=value and a NUL); Linux limits one to %d bytes (MAX_ARG_STRLEN), so no job could start with it", key, n, key, MaxEnvString)
	}
	return nil
}

// Var is one variable of a report.
type Var struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	Line  int    `json:"line,omitempty"` // 1-based line of the winning definition
}

// Options change how strict Parse is.
type Options struct {
	// Lenient skips blank lines and whole-line '#' comments (GitLab rejects
	// both).
	Lenient bool
	// MaxBytes and MaxVariables are the limits beyond which a warning says
	// GitLab would refuse the file; 0 means the GitLab default.
	MaxBytes, MaxVariables int
}

// Error is a report ferry refuses: it names the file and the line.
type Error struct {
	File string
	Line int // 0 when the error is about the whole file
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Report is a parsed dotenv file.
type Report struct {
	Vars     []Var    // in order of first appearance
	Warnings []string // each "file:line: what"; never holds a value
}

// Map returns the variables as a map.
func (r *Report) Map() map[string]string {
	m := make(map[string]string, len(r.Vars))
	for _, v := range r.Vars {
		m[v.Key] = v.Value
	}
	return m
}

// rubyStrip is Ruby's String#strip: ASCII white space and NUL only (Go's
// TrimSpace would also eat U+0085 and U+00A0, which GitLab keeps).
func rubyStrip(s string) string {
	return strings.Trim(s, " \t\n\v\f\r\x00")
}

// ValidKey reports whether k is a key GitLab accepts.
func ValidKey(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLength {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

var bom = []byte("\xef\xbb\xbf")

// Parse parses the content of the report named file (the name is only used
// in messages). A returned error is an *Error.
func Parse(file string, data []byte, opt Options) (*Report, error) {
	maxBytes, maxVars := opt.MaxBytes, opt.MaxVariables
	if maxBytes <= 0 {
		maxBytes = MaxBytes
	}
	if maxVars <= 0 {
		maxVars = MaxVariables
	}
	r := &Report{}
	if len(data) > maxBytes {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s: %d bytes: GitLab would refuse this report (limit %d bytes); ferry carries it anyway", file, len(data), maxBytes))
	}
	data = bytes.TrimPrefix(data, bom)
	if len(data) == 0 {
		return r, nil // an empty file: GitLab accepts it, no variables
	}
	// Ruby's each_line: a final newline does not start another line.
	text := strings.TrimSuffix(string(data), "\n")
	pos := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		fail := func(format string, args ...any) (*Report, error) {
			return nil, &Error{File: file, Line: n, Msg: fmt.Sprintf(format, args...)}
		}
		if !utf8.ValidString(line) {
			return fail("invalid UTF-8: dotenv reports must be UTF-8 text")
		}
		stripped := rubyStrip(line)
		if stripped == "" {
			if opt.Lenient {
				continue
			}
			return fail("blank line: GitLab rejects dotenv files with blank lines")
		}
		if strings.HasPrefix(stripped, "#") {
			if opt.Lenient {
				continue
			}
			return fail("comment line: GitLab rejects dotenv files with comments")
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return fail("no '=': every line must be KEY=VALUE")
		}
		k, v = rubyStrip(k), rubyStrip(v)
		switch {
		case k == "":
			return fail("empty key: every line must be KEY=VALUE")
		case strings.HasPrefix(k, "export ") || strings.HasPrefix(k, "export\t"):
			return fail("invalid key %q: GitLab does not accept `export`; write %s=...", k, rubyStrip(k[len("export"):]))
		case len(k) > MaxKeyLength:
			return fail("key of %d characters: GitLab allows at most %d", len(k), MaxKeyLength)
		case !ValidKey(k):
			return fail("invalid key %q: keys may only hold A-Z, a-z, 0-9 and _", k)
		case strings.ContainsRune(v, 0):
			// GitLab would store it; no process can receive it.
			return fail("%s: value holds a NUL byte", k)
		}
		if err := CheckEnvString(k, v); err != nil {
			return fail("%v", err)
		}
		if at, seen := pos[k]; seen {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s:%d: %s defined again (first on line %d): the last value wins, as in GitLab", file, n, k, r.Vars[at].Line))
			r.Vars[at].Value, r.Vars[at].Line = v, n
			continue
		}
		pos[k] = len(r.Vars)
		r.Vars = append(r.Vars, Var{Key: k, Value: v, Line: n})
	}
	total := 0
	for _, v := range r.Vars {
		if total += EnvSize(v.Key, v.Value); total > MaxEnvTotal {
			return nil, &Error{File: file, Line: v.Line, Msg: fmt.Sprintf(
				"%s: with this variable the report holds %d bytes of environment; ferry refuses more than %d bytes in one report (a whole environment is limited to ARG_MAX, typically 2 MiB, shared with the job's own variables)",
				v.Key, total, MaxEnvTotal)}
		}
	}
	if len(r.Vars) > maxVars {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s: %d variables: GitLab would refuse this report (limit %d); ferry carries it anyway", file, len(r.Vars), maxVars))
	}
	return r, nil
}

// Format writes vars as a strict report GitLab and Parse accept. Values must
// not hold a newline, NUL or leading/trailing white space (they would not
// survive); such a value is an error.
func Format(vars []Var) ([]byte, error) {
	var b bytes.Buffer
	for _, v := range vars {
		if !ValidKey(v.Key) {
			return nil, fmt.Errorf("dotenv: invalid key %q", v.Key)
		}
		if rubyStrip(v.Value) != v.Value || strings.ContainsAny(v.Value, "\n\x00") {
			return nil, fmt.Errorf("dotenv: %s: value cannot be written to a dotenv file", v.Key)
		}
		b.WriteString(v.Key)
		b.WriteByte('=')
		b.WriteString(v.Value)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}
