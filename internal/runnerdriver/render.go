package runnerdriver

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// sectionRe matches a trace section marker; the runner ends it with \r and
// then clears the line, so the header follows on the same line.
var sectionRe = regexp.MustCompile(`section_(start|end):(\d+):([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\r`)

// Render turns a raw job log into what a person reads in GitLab's job page:
// section markers become headers (with durations when a section ends),
// colours are kept, the line-clearing escapes are dropped.
func Render(log string) string {
	var b bytes.Buffer
	r := NewRenderer(&b)
	_, _ = io.WriteString(r, log)
	_ = r.Close()
	return b.String()
}

// Renderer renders a streamed job log line by line (see Render).
type Renderer struct {
	mu      sync.Mutex
	w       io.Writer
	partial []byte
	starts  map[string]int64
	hidden  map[string]bool
	depth   int
}

// NewRenderer returns a Renderer writing to w; Close flushes a last partial line.
func NewRenderer(w io.Writer) *Renderer {
	return &Renderer{w: w, starts: map[string]int64{}, hidden: map[string]bool{}}
}

// Write renders every complete line of p.
func (r *Renderer) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partial = append(r.partial, p...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			break
		}
		line := string(r.partial[:i])
		r.partial = r.partial[i+1:]
		if err := r.line(line, true); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Close renders what is left.
func (r *Renderer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.partial) == 0 {
		return nil
	}
	line := string(r.partial)
	r.partial = nil
	return r.line(line, false)
}

const (
	renderDim   = "\033[2m"
	renderReset = "\033[0m"
)

func (r *Renderer) line(line string, newline bool) error {
	var out strings.Builder
	indent := func() string { return strings.Repeat("  ", max(r.depth-1, 0)) }
	rest := line
	wrote := false
	for {
		loc := sectionRe.FindStringSubmatchIndex(rest)
		if loc == nil {
			break
		}
		before := clean(rest[:loc[0]])
		if strings.TrimSpace(stripANSI(before)) != "" {
			out.WriteString(indent() + before + "\n")
		}
		kind, name, opts := rest[loc[2]:loc[3]], rest[loc[6]:loc[7]], ""
		if loc[8] >= 0 {
			opts = rest[loc[8]:loc[9]]
		}
		ts, _ := strconv.ParseInt(rest[loc[4]:loc[5]], 10, 64)
		rest = rest[loc[1]:]
		if kind == "start" {
			r.starts[name] = ts
			r.hidden[name] = strings.Contains(opts, "hide_duration=true")
			r.depth++
			// The header is the rest of the line up to the next marker.
			next := sectionRe.FindStringIndex(rest)
			header := rest
			if next != nil {
				header, rest = rest[:next[0]], rest[next[0]:]
			} else {
				rest = ""
			}
			header = clean(header)
			if strings.TrimSpace(stripANSI(header)) == "" {
				header = name
			}
			if r.depth == 1 {
				out.WriteString("\n" + "▶ " + header + "\n")
			} else {
				out.WriteString(indent() + header + "\n")
			}
			wrote = true
			continue
		}
		if r.depth > 0 {
			r.depth--
		}
		if start, ok := r.starts[name]; ok && !r.hidden[name] {
			out.WriteString(fmt.Sprintf("%s%s  └ %s: %ds%s\n", strings.Repeat("  ", r.depth), renderDim, name, ts-start, renderReset))
		}
		delete(r.starts, name)
		delete(r.hidden, name)
		wrote = true
	}
	rest = clean(rest)
	if !wrote || strings.TrimSpace(stripANSI(rest)) != "" {
		out.WriteString(indent() + rest)
		if newline {
			out.WriteString("\n")
		}
	}
	_, err := io.WriteString(r.w, out.String())
	return err
}

// clean drops the escapes GitLab uses to clear lines, and carriage returns.
func clean(s string) string {
	s = strings.ReplaceAll(s, ansiClear, "")
	return strings.ReplaceAll(s, "\r", "")
}

var ansiRe = regexp.MustCompile("\033\\[[0-9;]*[A-Za-z]")

func stripANSI(s string) string { return ansiRe.ReplaceAllString(s, "") }

// StripANSI removes colour escapes, for assertions on log text.
func StripANSI(s string) string { return stripANSI(clean(s)) }
