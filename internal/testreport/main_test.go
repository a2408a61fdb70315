package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stream is what `go test -json` printed for a package with a passing, a
// failing, a skipped test and a skipped subtest, and a package that did not
// build.
const stream = `{"Action":"start","Package":"x/a"}
{"Action":"run","Package":"x/a","Test":"TestPass"}
{"Action":"output","Package":"x/a","Test":"TestPass","Output":"=== RUN   TestPass\n"}
{"Action":"output","Package":"x/a","Test":"TestPass","Output":"    a_test.go:5: chatter of a passing test\n"}
{"Action":"output","Package":"x/a","Test":"TestPass","Output":"--- PASS: TestPass (0.00s)\n"}
{"Action":"pass","Package":"x/a","Test":"TestPass"}
{"Action":"run","Package":"x/a","Test":"TestFail"}
{"Action":"output","Package":"x/a","Test":"TestFail","Output":"=== RUN   TestFail\n"}
{"Action":"output","Package":"x/a","Test":"TestFail","Output":"    a_test.go:9: the assertion that failed\n"}
{"Action":"output","Package":"x/a","Test":"TestFail","Output":"--- FAIL: TestFail (0.00s)\n"}
{"Action":"fail","Package":"x/a","Test":"TestFail"}
{"Action":"run","Package":"x/a","Test":"TestSkip"}
{"Action":"output","Package":"x/a","Test":"TestSkip","Output":"=== RUN   TestSkip\n"}
{"Action":"output","Package":"x/a","Test":"TestSkip","Output":"    a_test.go:12: SKIPPED: /usr/sbin/sshd missing: install openssh-server\n"}
{"Action":"output","Package":"x/a","Test":"TestSkip","Output":"--- SKIP: TestSkip (0.00s)\n"}
{"Action":"skip","Package":"x/a","Test":"TestSkip"}
{"Action":"run","Package":"x/a","Test":"TestParent/sub"}
{"Action":"output","Package":"x/a","Test":"TestParent/sub","Output":"    --- SKIP: TestParent/sub (0.00s)\n"}
{"Action":"skip","Package":"x/a","Test":"TestParent/sub"}
{"Action":"output","Package":"x/a","Output":"FAIL\n"}
{"Action":"output","Package":"x/a","Output":"FAIL\tx/a\t0.01s\n"}
{"Action":"fail","Package":"x/a"}
{"ImportPath":"x/b","Action":"build-output","Output":"b.go:3:1: syntax error\n"}
{"ImportPath":"x/b","Action":"build-fail"}
{"Action":"output","Package":"x/b","Output":"FAIL\tx/b [build failed]\n"}
{"Action":"fail","Package":"x/b"}
{"Action":"output","Package":"x/c","Output":"ok  \tx/c\t0.02s\n"}
{"Action":"pass","Package":"x/c"}
`

// The report keeps what plain go test prints (closing lines, failing
// tests' output, build errors), drops passing tests' chatter, and counts
// the skips with their reasons; the command's exit status is kept.
func TestReportKeepsFailuresAndCountsSkips(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "events")
	if err := os.WriteFile(f, []byte(stream), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := run([]string{"sh", "-c", "cat " + f + "; exit 3"}, "main module: ", &out)
	if code != 3 {
		t.Errorf("exit status %d, want the command's 3", code)
	}
	got := out.String()
	for _, want := range []string{
		"a_test.go:9: the assertion that failed\n",
		"--- FAIL: TestFail (0.00s)\n",
		"FAIL\tx/a\t0.01s\n",
		"b.go:3:1: syntax error\n",
		"FAIL\tx/b [build failed]\n",
		"ok  \tx/c\t0.02s\n",
		"main module: 2 tests skipped:\n",
		"    SKIP x/a TestSkip: SKIPPED: /usr/sbin/sshd missing: install openssh-server\n",
		"    SKIP x/a TestParent/sub: no reason given\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, not := range []string{"chatter of a passing test", "=== RUN"} {
		if strings.Contains(got, not) {
			t.Errorf("output has %q:\n%s", not, got)
		}
	}
}

// A test binary that dies mid-test (a timeout's panic) still shows the
// unfinished test's output, and a clean run says that nothing skipped.
func TestReportShowsUnfinishedTests(t *testing.T) {
	var out bytes.Buffer
	ev := `{"Action":"run","Package":"x/a","Test":"TestHang"}
{"Action":"output","Package":"x/a","Test":"TestHang","Output":"    a_test.go:3: waiting for the server\n"}
{"Action":"output","Package":"x/a","Output":"panic: test timed out after 1s\n"}
{"Action":"fail","Package":"x/a"}
`
	code := run([]string{"printf", "%s", ev}, "", &out)
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	got := out.String()
	for _, want := range []string{"waiting for the server", "panic: test timed out", "no test skipped\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "waiting for the server") > strings.Index(got, "panic: test timed out") {
		t.Errorf("the unfinished test's output comes after the panic:\n%s", got)
	}
}
