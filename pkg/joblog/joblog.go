// Package joblog writes to a GitLab job log the way gitlab-runner does:
// collapsible sections and the runner's colours, so ferry's lines look like
// the runner's own.
package joblog

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ANSI sequences the runner uses (common/trace and helpers/ansi in gitlab-runner).
const (
	BoldGreen = "\x1b[32;1m"
	Yellow    = "\x1b[0;33m"
	BoldRed   = "\x1b[31;1m"
	Reset     = "\x1b[0;m"
	clearLine = "\x1b[0K"
)

// sectionName keeps a section name to what GitLab's parser accepts
// ([a-z0-9_.-]; anything else becomes _).
func sectionName(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, strings.ToLower(name))
}

// Logger writes lines to the job log. It is safe for concurrent use.
type Logger struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

// New returns a Logger writing to w (usually a redacting writer on stdout).
func New(w io.Writer) *Logger { return &Logger{w: w, now: time.Now} }

// Section starts a collapsible section and returns the func that ends it.
// The name is lower-cased and reduced to [a-z0-9_.-]; ending twice is harmless.
func (l *Logger) Section(name, header string, collapsed bool) func() {
	name = sectionName(name)
	opt := ""
	if collapsed {
		opt = "[collapsed=true]"
	}
	l.printf("%ssection_start:%d:%s%s\r%s%s%s%s\n", clearLine, l.now().Unix(), name, opt, clearLine, BoldGreen, oneLine(header), Reset)
	var once sync.Once
	return func() {
		once.Do(func() {
			l.printf("%ssection_end:%d:%s\r%s\n", clearLine, l.now().Unix(), name, clearLine)
		})
	}
}

// Infof prints a plain line.
func (l *Logger) Infof(format string, args ...any) { l.line("", format, args...) }

// Noticef prints a bold green line (the runner's notices).
func (l *Logger) Noticef(format string, args ...any) { l.line(BoldGreen, format, args...) }

// Warnf prints a yellow line.
func (l *Logger) Warnf(format string, args ...any) { l.line(Yellow, format, args...) }

// Errorf prints a bold red line.
func (l *Logger) Errorf(format string, args ...any) { l.line(BoldRed, format, args...) }

func (l *Logger) line(colour, format string, args ...any) {
	msg := oneLine(fmt.Sprintf(format, args...))
	if colour == "" {
		l.printf("%s\n", msg)
		return
	}
	l.printf("%s%s%s\n", colour, msg, Reset)
}

func (l *Logger) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

// oneLine keeps a message on one log line: a newline in it would end a
// colour early and could forge a section marker.
func oneLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

// Duration formats an elapsed time for humans: "3 ms", "1.2 s", "2m5s".
func Duration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}
