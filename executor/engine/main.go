// Command ferry-engine is ferry with everything linked in: the stages plus
// the parts built on k8s.io/client-go (prepare's Kubernetes credentials
// check, kubectl with kubectl's own command code, the dotenv Secrets
// store). The ferry binary hands it the calls that need those, and the
// job's small kubectl (executor/kubectl) the kubectl commands it does not
// do itself; it also works on its own as the executor, only slower to
// start. A release build embeds it in ferry (scripts/build.sh).
package main

import (
	"io"
	"os"

	"gitlab.com/ferry-ci/ferry/pkg/apply/kustomize"
	"gitlab.com/ferry-ci/ferry/pkg/kubectl"
	"gitlab.com/ferry-ci/ferry/pkg/kubectl/upstream"
	"gitlab.com/ferry-ci/ferry/pkg/kubediscovery"
	"gitlab.com/ferry-ci/ferry/stages"
	"gitlab.com/ferry-ci/ferry/stages/kubehooks"
)

func main() {
	stages.InstallEngine(kubehooks.Engine())
	os.Exit(stages.Main(os.Args, os.Stdin, os.Stdout, os.Stderr, stages.Binary{Kubectl: runKubectl}))
}

// runKubectl is ferry's kubectl with everything: discovery, kustomize, and
// kubectl's own code, in process, for what ferry does not do itself.
func runKubectl(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return kubectl.Main(args, stdin, stdout, stderr, kubectl.Runtime{
		Other: upstream.Main, Discovery: kubediscovery.Cached, Kustomize: kustomize.Build})
}
