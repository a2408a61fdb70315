package apply

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// substitute replaces every ${NAME} in data with lookup(NAME).
//
// Only the braced form is replaced: manifests often carry shell scripts and
// nginx or Prometheus configs where a bare $VAR is meant literally, so
// replacing it would silently corrupt them. "$${NAME}" is an escape and
// yields a literal "${NAME}". "${" not followed by a name and "}" (e.g.
// "${foo[@]}", "${x:-y}") is left alone. Lines whose first non-blank
// character is '#' are YAML comments and are left alone, so a commented-out
// reference to an unset variable is not an error.
//
// An unset variable is an error naming the variable, file and line: an
// empty image or namespace deployed silently is worse than a failed job.
func substitute(data []byte, source string, lookup func(string) (string, bool)) ([]byte, error) {
	if lookup == nil || !bytes.Contains(data, []byte("${")) {
		return data, nil
	}
	var out bytes.Buffer
	out.Grow(len(data))
	var errs []error
	lines := bytes.SplitAfter(data, []byte("\n"))
	for i, line := range lines {
		trimmed := bytes.TrimLeft(line, " \t")
		if len(trimmed) > 0 && trimmed[0] == '#' || !bytes.Contains(line, []byte("${")) {
			out.Write(line)
			continue
		}
		s := string(line)
		for {
			j := strings.Index(s, "${")
			if j < 0 {
				out.WriteString(s)
				break
			}
			if j > 0 && s[j-1] == '$' {
				// "$${NAME}" -> literal "${NAME}"
				out.WriteString(s[:j-1])
				out.WriteString("${")
				s = s[j+2:]
				continue
			}
			end := strings.IndexByte(s[j+2:], '}')
			name := ""
			if end >= 0 {
				name = s[j+2 : j+2+end]
			}
			if end < 0 || !isVarName(name) {
				out.WriteString(s[:j+2])
				s = s[j+2:]
				continue
			}
			v, ok := lookup(name)
			if !ok {
				errs = append(errs, &ManifestError{Source: source, Line: i + 1, Msg: fmt.Sprintf("variable ${%s} is not set", name)})
				v = ""
			}
			out.WriteString(s[:j])
			out.WriteString(v)
			s = s[j+2+end+1:]
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out.Bytes(), nil
}

func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
