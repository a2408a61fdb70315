package stages

import (
	"bytes"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/joblog"
)

// TestDenialsFindThePath: the refused path is taken from the forms bash,
// coreutils and python print, split across writes or not; paths inside
// the job's writable dirs and lines without "Permission denied" are not
// reported; the report is one line naming the first path and how many more.
func TestDenialsFindThePath(t *testing.T) {
	for _, c := range []struct{ out, want string }{
		{"/b/custom-executor1/script.sh: line 3: /tmp/x: Permission denied\n", "/tmp/x"},
		{"touch: cannot touch '/var/tmp/y': Permission denied\n", "/var/tmp/y"},
		{"mkdir: cannot create directory ‘/tmp/d’: Permission denied\n", "/tmp/d"},
		{"PermissionError: [Errno 13] Permission denied: '/tmp/p.txt'\n", "/tmp/p.txt"},
		{"cp: cannot create regular file '/etc/hosts': Permission denied", "/etc/hosts"}, // no final newline
		{"bash: /job/build/x: Permission denied\n", ""},                                  // its own build dir
		{"/tmp/x: No such file or directory\n", ""},
		{"touch: cannot touch 'rel': Permission denied\n", ""},
	} {
		d := newDenials([]string{"/job/build"}, "/state/tmp")
		var sink bytes.Buffer
		w := d.writer(&sink)
		// Byte by byte: a line split across writes is still one line.
		for i := 0; i < len(c.out); i++ {
			w.Write([]byte{c.out[i]})
		}
		if sink.String() != c.out {
			t.Errorf("output not passed through: %q", sink.String())
		}
		var log bytes.Buffer
		d.report(joblog.New(&log), false)
		got := log.String()
		if c.want == "" {
			if got != "" {
				t.Errorf("%q: reported %q", c.out, got)
			}
			continue
		}
		if strings.Count(got, "\n") != 1 || !strings.Contains(got, "Sandbox: "+c.want+" was refused") || !strings.Contains(got, "$TMPDIR (/state/tmp)") {
			t.Errorf("%q: reported %q, want one line naming %s and $TMPDIR", c.out, got, c.want)
		}
	}
	d := newDenials(nil, "/state/tmp")
	d.writer(&bytes.Buffer{}).Write([]byte("a: /tmp/a: Permission denied\nb: /tmp/b: Permission denied\nc: /tmp/a: Permission denied\n"))
	var log bytes.Buffer
	d.report(joblog.New(&log), false)
	if !strings.Contains(log.String(), "/tmp/a was refused (and 1 more paths)") {
		t.Errorf("two paths: %q", log.String())
	}
}
