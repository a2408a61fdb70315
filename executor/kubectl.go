package main

import (
	"io"

	"gitlab.com/ferry-ci/ferry/pkg/kubectl"
)

// kubectlMain is ferry's kubectl: `ferry kubectl ...` and the per-job
// bin/kubectl symlink (argv[0] dispatch) both end here.
func kubectlMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return kubectl.Main(args, stdin, stdout, stderr)
}
