package joblog

import (
	"bytes"
	"testing"
	"time"
)

func TestSectionAndColours(t *testing.T) {
	var b bytes.Buffer
	l := New(&b)
	l.now = func() time.Time { return time.Unix(1700000000, 0) }
	end := l.Section("Prepare Ferry", "Preparing\nwith ferry", true)
	l.Infof("plain %d", 1)
	l.Noticef("notice")
	l.Warnf("warn")
	l.Errorf("error")
	end()
	end()
	want := "\x1b[0Ksection_start:1700000000:prepare_ferry[collapsed=true]\r\x1b[0K\x1b[32;1mPreparing with ferry\x1b[0;m\n" +
		"plain 1\n" +
		"\x1b[32;1mnotice\x1b[0;m\n" +
		"\x1b[0;33mwarn\x1b[0;m\n" +
		"\x1b[31;1merror\x1b[0;m\n" +
		"\x1b[0Ksection_end:1700000000:prepare_ferry\r\x1b[0K\n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		500 * time.Microsecond: "500 µs", 3 * time.Millisecond: "3 ms",
		1500 * time.Millisecond: "1.5 s", 125 * time.Second: "2m5s",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}
