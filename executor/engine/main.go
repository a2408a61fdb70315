// Command ferry-engine is ferry with everything linked in: the stages plus
// the parts built on k8s.io/client-go (prepare's Kubernetes credentials
// check, kubectl, the dotenv Secrets store). The ferry binary hands it the
// calls that need those; it also works on its own as the executor, only
// slower to start. A release build embeds it in ferry (scripts/build.sh).
package main

import (
	"os"

	"gitlab.com/ferry-ci/ferry/pkg/kubectl"
	"gitlab.com/ferry-ci/ferry/stages"
	"gitlab.com/ferry-ci/ferry/stages/kubehooks"
)

func main() {
	stages.InstallEngine(kubehooks.Engine())
	os.Exit(stages.Main(os.Args, os.Stdin, os.Stdout, os.Stderr, stages.Binary{Kubectl: kubectl.Main}))
}
