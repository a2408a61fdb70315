// Package upstream runs kubectl's own command code (k8s.io/kubectl/pkg/cmd,
// the same module version as client-go) for every verb and flag ferry's
// kubectl does not implement itself: describe, logs, exec, patch, label,
// annotate, scale, edit, rollout history|undo|pause|resume, auth can-i,
// get -w, -o custom-columns, delete -l, ... It is linked into the engine
// only (executor/engine), like everything that imports k8s.io.
//
// Two things differ from a stock kubectl, both for jobs on a shared runner:
// every request gets ferry's bound on a stalled API server
// (pkg/stallguard), and discovery is cached where ferry's own verbs cache
// it (the job's own cache under ferry's sandbox, FERRY_DISCOVERY_CACHE_DIR;
// else $FERRY_STATE_DIR/cache) rather than in the runner user's
// ~/.kube/cache, unless KUBECACHEDIR or --cache-dir says otherwise.
package upstream

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/plugin"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	// First, so that kubectl's packages do not load translations that
	// change nothing (see the package).
	_ "gitlab.com/ferry-ci/ferry/pkg/kubectl/upstream/i18nlazy"
	"gitlab.com/ferry-ci/ferry/pkg/stallguard"
)

// exit carries a fatal error's exit code out of kubectl's command code,
// which would otherwise os.Exit from deep inside (cmdutil.CheckErr).
type exit struct{ code int }

// Main runs `kubectl args...` with kubectl's own code and returns its exit
// code. args excludes the program name.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	streams := genericiooptions.IOStreams{In: stdin, Out: stdout, ErrOut: stderr}
	flags := genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().
		WithDiscoveryBurst(300).WithDiscoveryQPS(50.0).WithWarningPrinter(streams)
	if os.Getenv("KUBECACHEDIR") == "" {
		// The cache ferry's own verbs use: the job's own under ferry's
		// sandbox (FERRY_DISCOVERY_CACHE_DIR, <job>/cache/discovery; the
		// host-wide one is hidden there), else the host-wide one. kubectl
		// adds discovery/ and http/ to it as ferry does.
		dir := ""
		if d := os.Getenv("FERRY_DISCOVERY_CACHE_DIR"); d != "" {
			dir = filepath.Dir(d)
		} else if root := os.Getenv("FERRY_STATE_DIR"); root != "" {
			dir = filepath.Join(root, "cache")
		}
		if dir != "" {
			flags.CacheDir = &dir
		}
	}
	flags.WrapConfigFn = func(c *rest.Config) *rest.Config { return stallguard.Guard(c, 0) }

	// kubectl's fatal errors print a line and exit; here they unwind to
	// this function, which returns the code (tests run Main in process).
	cmdutil.BehaviorOnFatal(func(msg string, code int) {
		if msg != "" {
			if !strings.HasSuffix(msg, "\n") {
				msg += "\n"
			}
			fmt.Fprint(stderr, msg)
		}
		panic(exit{code})
	})
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(exit)
			if !ok {
				panic(r)
			}
			code = e.code
		}
	}()

	// As kubectl's main: the verbosity first, so that building the command
	// (plugins, kuberc) already logs at the level asked for.
	logs.GlogSetter(cmd.GetLogVerbosity(append([]string{"kubectl"}, args...))) //nolint:errcheck
	command := cmd.NewDefaultKubectlCommandWithArgs(cmd.KubectlOptions{
		PluginHandler: cmd.NewDefaultPluginHandler(plugin.ValidPluginFilenamePrefixes),
		Arguments:     append([]string{"kubectl"}, args...),
		ConfigFlags:   flags,
		IOStreams:     streams,
	})
	command.SetArgs(args)
	command.SetIn(stdin)
	command.SetOut(stdout)
	command.SetErr(stderr)
	if err := cli.RunNoErrOutput(command); err != nil {
		cmdutil.CheckErr(err)
		return 1
	}
	return 0
}
