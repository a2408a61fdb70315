package stages

import (
	"bytes"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"

	"gitlab.com/ferry-ci/ferry/pkg/joblog"
)

// denials notices, in the job's own output, the paths the job was refused
// outside its directories, so that ferry can say once at the end of the
// stage why and what to use instead. Landlock tells the refused process
// only EACCES, and tells ferry nothing; the job's tools print what they
// were refused (`bash: /tmp/x: Permission denied`, `touch: cannot touch
// '/tmp/x': Permission denied`, python's `[Errno 13] Permission denied:
// '/tmp/x'`), and ferry already copies every byte of that output through
// its redactor. A tool that swallows the error, or prints no path, is not
// noticed; a path the job names itself in a line with "Permission denied"
// may be reported though nothing was refused; reporting is all it does.
type denials struct {
	// writable are the job's writable hierarchies, resolved (with their
	// unresolved names) on the first refusal: most stages have none, and
	// resolving them cost every stage ~50 lstats.
	writable  []string
	resolve   sync.Once
	unchecked []string
	tmpdir    string

	mu      sync.Mutex
	first   string
	seen    map[string]bool
	writers []*denialWriter
}

func newDenials(writable []string, tmpdir string) *denials {
	return &denials{tmpdir: tmpdir, seen: map[string]bool{}, unchecked: writable}
}

func (d *denials) writableDirs() []string {
	d.resolve.Do(func() {
		for _, w := range d.unchecked {
			if r, err := filepath.EvalSymlinks(w); err == nil {
				d.writable = append(d.writable, r)
			}
			d.writable = append(d.writable, filepath.Clean(w))
		}
	})
	return d.writable
}

var permDenied = []byte("Permission denied")

// absPath is an absolute path as tools quote it: after the line's start, a
// blank, a quote or a bracket; up to a blank, a quote or a colon.
var absPath = regexp.MustCompile(`(?:^|[\s'"(\[‘“` + "`" + `])(/[^\s'"’”:,;)\]` + "`" + `]*)`)

// note takes one line of output.
func (d *denials) note(line []byte) {
	i := bytes.Index(line, permDenied)
	if i < 0 {
		return
	}
	// The path the message is about: the last one before "Permission
	// denied" (bash names its script first), else the first one after.
	var p string
	if m := absPath.FindAllSubmatch(line[:i], -1); len(m) > 0 {
		p = string(m[len(m)-1][1])
	} else if m := absPath.FindSubmatch(line[i:]); m != nil {
		p = string(m[1])
	}
	if p == "" {
		return
	}
	p = filepath.Clean(p)
	for _, w := range d.writableDirs() {
		if within(p, w) {
			return // inside its own dirs: not the sandbox's doing
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.first == "" {
		d.first = p
	}
	d.seen[p] = true
}

// report writes the one line, if anything was refused.
func (d *denials) report(log *joblog.Logger, privateTmp bool) {
	for _, w := range d.writers {
		w.flush()
	}
	d.mu.Lock()
	first, n := d.first, len(d.seen)
	d.mu.Unlock()
	if first == "" {
		return
	}
	more := ""
	if n > 1 {
		more = " (and " + strconv.Itoa(n-1) + " more paths)"
	}
	inTmp := within(first, "/tmp") || within(first, "/var/tmp")
	switch {
	case inTmp && !privateTmp:
		log.Warnf("Sandbox: %s was refused%s: this host gives jobs no private /tmp, so /tmp and /var/tmp are not writable; use $TMPDIR (%s) for temporary files", first, more, d.tmpdir)
	default:
		log.Warnf("Sandbox: %s was refused%s: outside its directories a job may only read; write into the build dir ($CI_PROJECT_DIR) or $TMPDIR (%s)", first, more, d.tmpdir)
	}
}

// writer copies the job's output to w and watches it, line by line.
func (d *denials) writer(w io.Writer) io.Writer {
	x := &denialWriter{d: d, w: w}
	d.writers = append(d.writers, x)
	return x
}

type denialWriter struct {
	d    *denials
	w    io.Writer
	part []byte // the line begun in an earlier write (at most maxPart)
}

const maxPart = 4096

func (x *denialWriter) Write(p []byte) (int, error) {
	n, err := x.w.Write(p)
	x.scan(p[:n])
	return n, err
}

func (x *denialWriter) scan(p []byte) {
	if len(x.part) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			x.keep(append(x.part, p...))
			return
		}
		x.part = append(x.part, p[:i]...)
		x.d.note(x.part)
		x.part = x.part[:0]
		p = p[i+1:]
	}
	// Most output has no refusal at all: one search per write.
	last := bytes.LastIndexByte(p, '\n')
	if last >= 0 && bytes.Contains(p[:last], permDenied) {
		for _, line := range bytes.Split(p[:last], []byte{'\n'}) {
			x.d.note(line)
		}
	}
	x.keep(p[last+1:])
}

// keep holds the unfinished last line (its tail, for a very long one).
func (x *denialWriter) keep(b []byte) {
	if len(b) > maxPart {
		b = b[len(b)-maxPart:]
	}
	x.part = append(x.part[:0:0], b...)
}

// flush notes an unfinished last line.
func (x *denialWriter) flush() {
	if len(x.part) > 0 {
		x.d.note(x.part)
		x.part = nil
	}
}
