package stages

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
)

// kubectlShim is the admin's --kubectl-shim setting.
var kubectlShim bool

func init() {
	Register(Feature{
		Name: "kubectl",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&kubectlShim, "kubectl-shim", true, "put ferry's kubectl (bin/kubectl -> ferry) first on the job's PATH")
		},
		Prepare: kubectlPrepare,
		// The link must point at the engine's small kubectl, which only
		// the engine knows (beside it).
		NeedsEngine: func(sub, _ string) bool { return sub == "prepare" && kubectlShim },
	})
}

// kubectlPrepare links <state>/bin/kubectl to the small kubectl unpacked
// beside the running engine (which prepare runs in whenever the shim is
// on), or to the engine itself when it has none: the job's PATH starts
// with that directory, so an unchanged `kubectl apply` in the script runs
// ferry's kubectl, with no kubectl installed on the host.
func kubectlPrepare(_ context.Context, j *Job) error {
	if !kubectlShim {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("kubectl shim: locating the ferry binary: %w", err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return fmt.Errorf("kubectl shim: %w", err)
	}
	target := enginebin.JobKubectl(self)
	bin := j.State.BinDir()
	if err := os.MkdirAll(bin, 0o700); err != nil {
		return fmt.Errorf("kubectl shim: %w", err)
	}
	link := filepath.Join(bin, "kubectl")
	// A retried prepare finds the link already there.
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kubectl shim: %w", err)
	}
	if err := os.Symlink(target, link); err != nil {
		return fmt.Errorf("kubectl shim: %w", err)
	}
	return nil
}
