// Package gitlabdotenv parses dotenv reports the way GitLab itself does
// (Ci::ParseDotenvArtifactService): strict, no comments, no blank lines, no
// quotes removed, no expansion. The runner driver uses it to play GitLab's
// side; it is deliberately independent of ferry's own parser.
package gitlabdotenv

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// MaxSize is the largest report GitLab accepts, in bytes.
const MaxSize = 5 * 1024

// Var is one parsed variable.
type Var struct{ Key, Value string }

var keyRe = regexp.MustCompile(`^[A-Za-z0-9_]{1,255}$`)

// ErrInvalidFormat is what GitLab answers (HTTP 400 "Invalid Format"); it
// gives no line number, so neither does this.
var ErrInvalidFormat = errors.New("Invalid Format")

// Parse parses a report. Duplicate keys: the last one wins (its position is
// that of the first occurrence, like a Ruby Hash). maxVars <= 0 means no limit.
func Parse(data []byte, maxVars int) ([]Var, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("dotenv report is too large: %d bytes (limit %d): %w", len(data), MaxSize, ErrInvalidFormat)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var out []Var
	pos := map[string]int{}
	text := string(data)
	if text == "" {
		return nil, nil
	}
	// Ruby's each_line: the final newline does not make an extra line.
	text = strings.TrimSuffix(text, "\n")
	for _, line := range strings.Split(text, "\n") {
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, ErrInvalidFormat
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !keyRe.MatchString(key) {
			return nil, ErrInvalidFormat
		}
		if i, seen := pos[key]; seen {
			out[i].Value = value
			continue
		}
		pos[key] = len(out)
		out = append(out, Var{Key: key, Value: value})
	}
	if maxVars > 0 && len(out) > maxVars {
		return nil, fmt.Errorf("dotenv report has %d variables (limit %d): %w", len(out), maxVars, ErrInvalidFormat)
	}
	return out, nil
}
