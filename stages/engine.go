package stages

import (
	"context"
	"errors"
	"io"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore"
)

// Engine is the half of ferry that links k8s.io/client-go: the Kubernetes
// credentials check of prepare and the dotenv Secrets store. Only the engine
// binary (executor/engine) installs it. The ferry binary the runner calls for
// every stage leaves it out, because client-go's package initialisers alone
// cost ~8 ms per process, more than the rest of a stage; when a call needs
// the engine, that binary hands the whole call to it (see NeedsEngine and
// docs/executor.md, "Two binaries in one file").
type Engine struct {
	// KubePrepare loads, checks and installs the job's Kubernetes
	// credentials (pkg/kubecreds).
	KubePrepare func(ctx context.Context, j *Job, s KubeSettings) error
	// DotenvKubeStore opens the Kubernetes Secrets store of dotenv reports
	// (pkg/dotenvstore/kubestore); kubeconfig "" means in-cluster.
	DotenvKubeStore func(kubeconfig, namespace string) (dotenvstore.Store, error)
	// DeployLockHolder runs the job's deploy lock holder process
	// (pkg/deploylock.Main) that prepare starts.
	DeployLockHolder func(stdin io.Reader, stderr io.Writer) int
}

// KubeSettings are the runner admin's --kube-* flags.
type KubeSettings struct {
	Variable         string // job variable holding a kubeconfig
	Sources          string // comma-separated: kubeconfig, cluster-vars, none
	AllowExec        bool
	AllowInsecure    bool
	PreflightTimeout time.Duration
}

var engine *Engine

// InstallEngine makes the engine's functions available to the features;
// the engine binary calls it before Main.
func InstallEngine(e *Engine) { engine = e }

// errNoEngine is a bug guard: NeedsEngine decided this call could run
// without the engine, yet a feature needed it.
var errNoEngine = errors.New("ferry: internal error: this call needs the engine binary but runs without it (NeedsEngine is wrong)")

// NeedsEngine reports whether the call `ferry <sub> ... <stage>` (stage is
// "" except for run) reaches code only the engine has. It is false in the
// engine itself. It reads the features' parsed flags, so call it after
// ParseOptions.
func NeedsEngine(sub, stage string) bool {
	if engine != nil {
		return false
	}
	for _, f := range Features() {
		if f.NeedsEngine != nil && f.NeedsEngine(sub, stage) {
			return true
		}
	}
	return false
}
