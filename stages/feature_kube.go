package stages

import (
	"context"
	"flag"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/kubecreds"
)

// kubeFlags are the runner admin's --kube-* settings (docs/kubernetes-credentials.md).
var kubeFlags struct {
	variable         string
	sources          string
	allowExec        bool
	allowInsecure    bool
	preflightTimeout time.Duration
}

func init() {
	Register(Feature{
		Name: "kube",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&kubeFlags.variable, "kube-variable", "KUBECONFIG", "name of the job variable holding a kubeconfig (YAML or base64)")
			fs.StringVar(&kubeFlags.sources, "kube-sources", kubecreds.SourceKubeconfig+","+kubecreds.SourceClusterVars, "Kubernetes credential sources: kubeconfig, cluster-vars (KUBE_URL/KUBE_TOKEN), or none")
			fs.BoolVar(&kubeFlags.allowExec, "kube-allow-exec", false, "allow exec credential plugins and auth-provider entries in job kubeconfigs (they run on the runner host)")
			fs.BoolVar(&kubeFlags.allowInsecure, "kube-allow-insecure", true, "allow insecure-skip-tls-verify in job kubeconfigs (with a warning); false refuses it")
			fs.DurationVar(&kubeFlags.preflightTimeout, "kube-preflight-timeout", 5*time.Second, "how long the Kubernetes credentials check in prepare may take")
		},
		// The kubeconfig lives in the state dir (removed by cleanup and the
		// stale sweep) and decoded copies are cleanup.json paths, so the
		// feature needs no Cleanup of its own.
		Prepare: kubePrepare,
	})
}

func kubePrepare(ctx context.Context, j *Job) error {
	sources, err := kubecreds.ParseSources(kubeFlags.sources)
	if err != nil {
		return err // the admin's flag: a system failure
	}
	opt := kubecreds.Options{
		Variable:         strings.TrimSpace(kubeFlags.variable),
		Sources:          sources,
		AllowExec:        kubeFlags.allowExec,
		RefuseInsecure:   !kubeFlags.allowInsecure,
		PreflightTimeout: kubeFlags.preflightTimeout,
	}
	vars := j.Env.JobVars()
	in := kubecreds.Input{Vars: vars, FileVars: map[string]bool{}}
	if j.Payload != nil {
		for _, v := range j.Payload.Variables {
			if v.File {
				in.FileVars[v.Key] = true
			}
		}
		for _, s := range j.Payload.Steps {
			in.Scripts = append(in.Scripts, s.Script...)
		}
	}
	return kubecreds.Setup(ctx, in, opt, j.State, j.Log, vars["CI_PROJECT_DIR"])
}
