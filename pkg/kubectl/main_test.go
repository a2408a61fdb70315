package kubectl

import (
	"gitlab.com/ferry-ci/ferry/pkg/apply/kustomize"
	"gitlab.com/ferry-ci/ferry/pkg/kubectl/upstream"
	"gitlab.com/ferry-ci/ferry/pkg/kubediscovery"
)

// engine is the runtime of ferry's engine: the tests run Main as the engine
// does (executor/engine).
var engine = Runtime{Other: upstream.Main, Discovery: kubediscovery.Cached, Kustomize: kustomize.Build}
