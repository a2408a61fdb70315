package runnerdriver

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/redact"
)

// jobLog is the job's trace as GitLab stores it: everything goes through the
// runner's masking (exact values of masked variables) first.
type jobLog struct {
	red  *redact.Writer
	sink *logSink
}

type logSink struct {
	d       *Driver
	mu      sync.Mutex
	buf     bytes.Buffer
	trigger string
	onLog   func([]byte) bool
	cancel  func()
}

func newJobLog(d *Driver, masked []string, trigger string, onLog func([]byte) bool, cancel func()) *jobLog {
	s := &logSink{d: d, trigger: trigger, onLog: onLog, cancel: cancel}
	return &jobLog{red: redact.NewWriter(s, masked), sink: s}
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	before := s.buf.Len()
	s.buf.Write(p)
	fire := false
	if s.trigger != "" {
		from := max(0, before-len(s.trigger))
		fire = bytes.Contains(s.buf.Bytes()[from:], []byte(s.trigger))
	}
	if s.onLog != nil && s.onLog(s.buf.Bytes()) {
		fire = true
	}
	s.mu.Unlock()
	if w := s.d.cfg.LogWriter; w != nil {
		s.d.logMu.Lock()
		_, _ = w.Write(p)
		s.d.logMu.Unlock()
	}
	if fire {
		s.cancel()
	}
	return len(p), nil
}

// Write receives executor output.
func (l *jobLog) Write(p []byte) (int, error) { return l.red.Write(p) }

// raw writes a line the runner itself prints.
func (l *jobLog) raw(s string) { _, _ = l.red.Write([]byte(s)) }

// section opens a runner trace section (helpers.BuildSection) and returns
// the function that closes it.
func (l *jobLog) section(name, header string) func() {
	l.raw(fmt.Sprintf("%ssection_start:%d:%s\r%s%s%s%s%s\n",
		ansiClear, time.Now().Unix(), name, ansiClear, ansiClear, ansiBoldCyan, header, ansiReset+ansiReset))
	return func() {
		l.raw(fmt.Sprintf("%ssection_end:%d:%s\r%s", ansiClear, time.Now().Unix(), name, ansiClear))
	}
}

// close flushes the masking and returns the whole log.
func (l *jobLog) close() string {
	_ = l.red.Close()
	l.sink.mu.Lock()
	defer l.sink.mu.Unlock()
	return l.sink.buf.String()
}
