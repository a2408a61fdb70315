package runnerdriver

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/redact"
)

// jobLog is the job's trace as GitLab stores it: everything goes through the
// runner's masking (exact values of masked variables) first. With trace
// timestamps (FF_TIMESTAMPS, default since 18.7) the trace also gets the
// runner's per-line prefix; Log stays the text as GitLab's UI renders it.
type jobLog struct {
	red    *redact.Writer // executor output
	redRaw *redact.Writer // the runner's own lines
	sink   *logSink
}

// Trace timestamps. The runner (18.7+ by default) starts every line it sends
// with `<UTC time, microseconds> <stream><O|E> `: stream 00 for its own
// lines, 01 for the executor's output; O is stdout (the driver, like the
// runner's custom executor trace, gives stdout and stderr one pipe).
const traceTimeLayout = "2006-01-02T15:04:05.000000Z"

// TracePrefix matches one line's timestamp prefix (a "+" after the stream
// marks a line the runner continues after a partial flush).
var TracePrefix = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \d\d[OE]\+? `)

// ParseTrace strips the timestamp prefix from every line of a trace, as
// GitLab does before rendering it, and fails on a line without one.
func ParseTrace(trace string) (string, error) {
	if trace == "" {
		return "", nil
	}
	lines := strings.SplitAfter(trace, "\n")
	var b strings.Builder
	for i, l := range lines {
		if l == "" {
			continue
		}
		m := TracePrefix.FindString(l)
		if m == "" {
			return "", fmt.Errorf("trace line %d has no timestamp prefix: %q", i+1, l)
		}
		b.WriteString(l[len(m):])
	}
	return b.String(), nil
}

type logSink struct {
	d       *Driver
	mu      sync.Mutex
	buf     bytes.Buffer
	stamps  bool         // FF_TIMESTAMPS
	trace   bytes.Buffer // buf with the runner's line prefixes
	midLine bool         // trace does not end at a line start
	trigger string
	onLog   func([]byte) bool
	cancel  func()
}

func newJobLog(d *Driver, masked []string, stamps bool, trigger string, onLog func([]byte) bool, cancel func()) *jobLog {
	s := &logSink{d: d, stamps: stamps, trigger: trigger, onLog: onLog, cancel: cancel}
	return &jobLog{
		red:    redact.NewWriter(streamWriter{s, "01O"}, masked),
		redRaw: redact.NewWriter(streamWriter{s, "00O"}, masked),
		sink:   s,
	}
}

// streamWriter writes to the sink as one of the runner's trace streams.
type streamWriter struct {
	s      *logSink
	stream string
}

func (w streamWriter) Write(p []byte) (int, error) { return w.s.write(p, w.stream) }

// stamp appends p to the trace, a prefix at every line start.
func (s *logSink) stamp(p []byte, stream string) {
	for len(p) > 0 {
		if !s.midLine {
			s.trace.WriteString(time.Now().UTC().Format(traceTimeLayout) + " " + stream + " ")
		}
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line = p[:i+1]
		}
		s.trace.Write(line)
		s.midLine = line[len(line)-1] != '\n'
		p = p[len(line):]
	}
}

func (s *logSink) write(p []byte, stream string) (int, error) {
	s.mu.Lock()
	before := s.buf.Len()
	s.buf.Write(p)
	if s.stamps {
		s.stamp(p, stream)
	}
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

// raw writes a line the runner itself prints. Executor output still held
// back by the masking goes first, so the runner's line starts where GitLab
// shows it.
func (l *jobLog) raw(s string) {
	_ = l.red.Close()
	_, _ = l.redRaw.Write([]byte(s))
	_ = l.redRaw.Close()
}

// section opens a runner trace section (helpers.BuildSection) and returns
// the function that closes it.
func (l *jobLog) section(name, header string) func() {
	l.raw(fmt.Sprintf("%ssection_start:%d:%s\r%s%s%s%s%s\n",
		ansiClear, time.Now().Unix(), name, ansiClear, ansiClear, ansiBoldCyan, header, ansiReset+ansiReset))
	return func() {
		l.raw(fmt.Sprintf("%ssection_end:%d:%s\r%s", ansiClear, time.Now().Unix(), name, ansiClear))
	}
}

// close flushes the masking and returns the whole log and, with
// timestamps, the trace (empty without).
func (l *jobLog) close() (log, trace string) {
	_ = l.red.Close()
	_ = l.redRaw.Close()
	l.sink.mu.Lock()
	defer l.sink.mu.Unlock()
	return l.sink.buf.String(), l.sink.trace.String()
}
