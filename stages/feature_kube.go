package stages

import (
	"context"
	"flag"
	"strings"
	"time"
)

// kubeFlags are the runner admin's --kube-* settings (docs/kubernetes-credentials.md).
var kubeFlags KubeSettings

// DefaultKubeSources is --kube-sources' default: every source ferry knows.
const DefaultKubeSources = "kubeconfig,cluster-vars"

func init() {
	Register(Feature{
		Name: "kube",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&kubeFlags.Variable, "kube-variable", "KUBECONFIG", "name of the job variable holding a kubeconfig (YAML or base64)")
			fs.StringVar(&kubeFlags.Sources, "kube-sources", DefaultKubeSources, "Kubernetes credential sources: kubeconfig, cluster-vars (KUBE_URL/KUBE_TOKEN), or none")
			fs.BoolVar(&kubeFlags.AllowExec, "kube-allow-exec", false, "allow exec credential plugins and auth-provider entries in job kubeconfigs (they run on the runner host)")
			fs.BoolVar(&kubeFlags.AllowInsecure, "kube-allow-insecure", true, "allow insecure-skip-tls-verify in job kubeconfigs (with a warning); false refuses it")
			fs.DurationVar(&kubeFlags.PreflightTimeout, "kube-preflight-timeout", 5*time.Second, "how long the Kubernetes credentials check in prepare may take")
		},
		// The kubeconfig lives in the state dir (removed by cleanup and the
		// stale sweep) and decoded copies are cleanup.json paths, so the
		// feature needs no Cleanup of its own.
		Prepare: kubePrepare,
		NeedsEngine: func(sub, _ string) bool {
			return sub == "prepare" && !kubeSourcesOff(kubeFlags.Sources)
		},
	})
}

// kubeSourcesOff reports whether --kube-sources turns every source off; an
// invalid value counts as on, so that the engine reports it.
func kubeSourcesOff(v string) bool {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" && s != "none" {
			return false
		}
	}
	return true
}

func kubePrepare(ctx context.Context, j *Job) error {
	if kubeSourcesOff(kubeFlags.Sources) {
		return nil
	}
	if engine == nil {
		return errNoEngine
	}
	s := kubeFlags
	s.Variable = strings.TrimSpace(s.Variable)
	return engine.KubePrepare(ctx, j, s)
}
