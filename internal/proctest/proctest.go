// Package proctest holds what the tests of both modules that run real
// processes (ferry, its kubectl, bash, the real kubectl) need alike.
package proctest

import (
	"errors"
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
