// Package proctest holds what the tests of both modules that run real
// processes (ferry, its kubectl, bash, the real kubectl) need alike.
package proctest

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"testing"
)

// ExitCode is the exit code of a command that returned err from Run,
// Output or CombinedOutput: 0 for nil, the process's code for an exit
// error. Any other error (the program could not be started, a pipe
// failed) ends the test: an exit code the tests compare must be the
// program's own.
func ExitCode(t testing.TB, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	t.Fatalf("running the command: %v", err)
	return -1
}

// CopyExecutable copies the program at src to dst, mode 0755 whatever the
// umask (a test hands it to another user, or puts it where a link would not
// do), streaming: test programs and ferry are tens of megabytes.
func CopyExecutable(tb testing.TB, src, dst string) {
	tb.Helper()
	in, err := os.Open(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(dst, 0o755); err != nil {
		tb.Fatal(err)
	}
}
