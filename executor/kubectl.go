package main

import (
	"fmt"
	"io"
)

// kubectlMain is ferry's kubectl entry point. pkg/kubectl is not in the tree
// yet; until it is, say so plainly instead of pretending.
func kubectlMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "ferry: kubectl: not built into this ferry yet (pkg/kubectl missing)")
	return 1
}
