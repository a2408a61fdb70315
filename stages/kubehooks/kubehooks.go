// Package kubehooks is the engine's half of the stages: the feature code that
// links k8s.io/client-go. Only the engine binary imports it (executor/engine),
// so the ferry binary the runner starts for every stage stays small and
// starts fast; see stages.Engine.
package kubehooks

import (
	"context"
	"fmt"

	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/pkg/deploylock"
	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore"
	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore/kubestore"
	"gitlab.com/ferry-ci/ferry/pkg/kubecreds"
	"gitlab.com/ferry-ci/ferry/stages"
)

// Engine returns the functions stages.InstallEngine needs.
func Engine() *stages.Engine {
	return &stages.Engine{
		KubePrepare:      kubePrepare,
		DotenvKubeStore:  dotenvKubeStore,
		DeployLockHolder: deploylock.Main,
	}
}

// kubePrepare turns the job's credential variables into its private
// kubeconfig and checks them (docs/kubernetes-credentials.md).
func kubePrepare(ctx context.Context, j *stages.Job, s stages.KubeSettings) error {
	sources, err := kubecreds.ParseSources(s.Sources)
	if err != nil {
		return err // the admin's flag: a system failure
	}
	opt := kubecreds.Options{
		Variable:         s.Variable,
		Sources:          sources,
		AllowExec:        s.AllowExec,
		RefuseInsecure:   !s.AllowInsecure,
		PreflightTimeout: s.PreflightTimeout,
	}
	vars := j.Env.JobVars()
	in := kubecreds.Input{Vars: vars, FileVars: map[string]bool{}}
	if j.Payload != nil {
		for _, v := range j.Payload.Variables {
			if v.File {
				in.FileVars[v.Key] = true
			}
		}
		for _, st := range j.Payload.Steps {
			in.Scripts = append(in.Scripts, st.Script...)
		}
	}
	return kubecreds.Setup(ctx, in, opt, j.State, j.Log, vars["CI_PROJECT_DIR"])
}

// dotenvKubeStore opens the Secrets store with the admin's kubeconfig, or the
// in-cluster config when kubeconfig is "".
func dotenvKubeStore(kubeconfig, namespace string) (dotenvstore.Store, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("ferry: --dotenv-kubeconfig %s: %w", kubeconfig, err)
	}
	return kubestore.New(cfg, namespace)
}
