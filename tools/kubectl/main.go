// Command kubectl is the reference kubectl of ferry's differential tests
// (e2e/differential, e2e/kubectl): kubectl built from k8s.io/kubectl at the
// version ferry links (pinned in this module's go.mod, built into bin/ by
// `make kubectl`), so that the tests compare ferry with the same kubectl
// code on any machine rather than with whatever kubectl a host has on PATH.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	// RunNoErrOutput leaves printing the error to CheckErr, which prints it
	// the way kubectl does ("error: ...", "Error from server (...): ...")
	// and exits with kubectl's codes.
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
	os.Exit(0)
}
