package kubectl

import (
	"context"
	"fmt"

	"gitlab.com/ferry-ci/ferry/pkg/version"
)

// version is ferry's own: kubectl's would print the version of the
// k8s.io/kubectl module ferry links, and scripts that log
// `kubectl version` should see that ferry ran.
func (e *env) version(ctx context.Context, args []string) error {
	fs := e.flags("version")
	var client bool
	fs.BoolVar(&client, "client", false, "client version only")
	fs.StringP("output", "o", "", "ignored")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Client Version: ferry %s (kubectl-compatible subset: %s)\n", version.Version, Supported)
	if client {
		return nil
	}
	a, err := e.getApplier()
	if err != nil {
		return err
	}
	v, err := a.ServerVersion(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Server Version: %s\n", v)
	return nil
}
