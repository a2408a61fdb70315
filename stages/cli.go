package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"gitlab.com/ferry-ci/ferry/pkg/deploylock/lockclient"
	"gitlab.com/ferry-ci/ferry/pkg/docker/holder"
	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobhome"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/tmpns"
	"gitlab.com/ferry-ci/ferry/pkg/version"
)

// Binary is what differs between ferry's two builds (docs/executor.md, "Two
// binaries in one file"): the engine has kubectl and the client-go
// features; the ferry binary the runner calls has Handoff instead.
type Binary struct {
	// Kubectl is ferry's kubectl (engine only).
	Kubectl func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
	// Handoff replaces the process with the engine running argv; stateRoot
	// is where an embedded engine is unpacked. It returns only on failure.
	// Nil in the engine.
	Handoff func(argv []string, stateRoot string) error
}

const usageHead = `ferry: a GitLab Runner custom executor for shell jobs that deploy

Usage:
  ferry config  [flags]                    config_exec: prints the JSON the runner reads
  ferry prepare [flags]                    prepare_exec: creates the job's private state
  ferry run     [flags] <script> <stage>   run_exec: runs one stage script with bash
  ferry cleanup [flags]                    cleanup_exec: removes everything of the job
  ferry kubectl <args...>                  kubectl-compatible client (also as "kubectl")
  ferry check [--config config.toml]       checks this runner host (ferry check --help)
  ferry version | help

Every stage accepts every flag; each flag falls back to the environment
variable shown (the flag wins). Flags come right after the subcommand.

Flags:
`

const usageTail = `
Kubernetes work (prepare's credentials check, kubectl, the dotenv Secrets
store) runs in ferry-engine, which ferry carries and unpacks once into
<state-dir>/engine/; FERRY_ENGINE=<path> names another ferry-engine binary.

Exit codes: BUILD_FAILURE_EXIT_CODE when the job's script or input failed,
SYSTEM_FAILURE_EXIT_CODE when ferry or the host failed, 2 when ferry is run
outside a runner. See docs/executor.md.
`

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	PrintDefaults(w)
	fmt.Fprint(w, usageTail)
}

// Main is the whole command line of both binaries: argv[0] "kubectl" (the
// per-job bin/kubectl link) or `ferry kubectl` runs kubectl; the stage
// subcommands run the stages, in this process or, when they need the
// engine and this is not it, in the engine. It returns the exit code.
func Main(argv []string, stdin io.Reader, stdout, stderr io.Writer, b Binary) int {
	if len(argv) > 0 && filepath.Base(argv[0]) == "kubectl" {
		return b.kubectl(argv[1:], stdin, stdout, stderr)
	}
	if len(argv) > 0 && jobhome.IsSSHShim(argv[0]) {
		// The job's bin/ssh, scp, sftp (docs/home.md).
		return jobhome.SSHShim(argv, stderr)
	}
	if len(argv) < 2 {
		usage(stderr)
		return 2
	}
	sub, args := argv[1], argv[2:]
	switch sub {
	case "version", "--version":
		fmt.Fprintf(stdout, "ferry %s\n", version.Version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	case "kubectl":
		return b.kubectl(args, stdin, stdout, stderr)
	case "check":
		return check(args, stdout, stderr, b)
	case tmpns.Subcommand:
		// Hidden: the re-exec that starts a job's shell in its private
		// /tmp (pkg/tmpns); argv[2:] as it built them.
		return tmpns.Main(args)
	case holder.Subcommand:
		// Hidden: the Docker connection holder prepare starts (pkg/docker/holder).
		return holder.Main(stdin, os.Stdout, stderr)
	case lockclient.Subcommand:
		// Hidden: the deploy lock holder prepare starts (pkg/deploylock).
		if engine == nil || engine.DeployLockHolder == nil {
			fmt.Fprintln(stderr, errNoEngine)
			return 1
		}
		return engine.DeployLockHolder(stdin, stderr)
	case "config", "prepare", "run", "cleanup":
	default:
		fmt.Fprintf(stderr, "ferry: unknown command %q (try: ferry help)\n", sub)
		return 2
	}

	// Installing the signal handlers starts a runtime thread (~0.2 ms, a
	// tenth of ferry's work per stage): let it overlap reading the
	// environment and the flags. No stage work starts before it is done.
	type notified struct {
		ctx  context.Context
		stop context.CancelFunc
	}
	sig := make(chan notified, 1)
	go func() {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		sig <- notified{ctx, stop}
	}()
	env := jobenv.FromOS()
	opts, rest, err := ParseOptions(sub, args, env.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return ExitCode(env, err)
	}
	stage := ""
	if sub == "run" && len(rest) == 2 {
		stage = rest[1]
	}
	if b.Handoff != nil && NeedsEngine(sub, stage) {
		// Before any output or state: the engine redoes the whole call. The
		// embedded engine is unpacked under the state root, which must not
		// be in the build directory either.
		err := stateDirOutsideBuilds(filepath.Join(opts.StateDir, enginebin.DirName), env, opts)
		if err == nil {
			// SIGTERM (a cancel, the job timeout, 19.0's prepare_timeout)
			// while the engine is unpacked must not be swallowed by the
			// handler above and lost at the exec: back to the default
			// action (ferry ends at once, nothing of the job made yet; an
			// unpack cut short is swept by the next one) until the engine
			// installs its own.
			n := <-sig
			interrupted := n.ctx.Err() != nil
			n.stop() // (also cancels n.ctx)
			if interrupted {
				err = errInterrupted
			} else {
				err = b.Handoff(append([]string{"ferry"}, argv[1:]...), opts.StateDir)
			}
		}
		report(sub, stderr, err)
		return ExitCode(env, err) // the host's problem: a system failure
	}
	n := <-sig
	ctx := n.ctx
	defer n.stop()

	switch sub {
	case "config":
		err = wantArgs(sub, rest, 0)
		if err == nil {
			err = WriteConfig(env, opts, stdout)
		}
	case "prepare":
		err = wantArgs(sub, rest, 0)
		if err == nil {
			err = Prepare(ctx, env, opts, stdout)
			if err != nil && ctx.Err() != nil {
				// SIGTERM: undo what this attempt made before exiting.
				if uerr := undoInterruptedPrepare(env, opts); uerr != nil {
					err = errors.Join(err, uerr)
				} else if !errors.Is(err, errInterrupted) {
					err = fmt.Errorf("%w (%v)", errInterrupted, err)
				}
			}
		}
	case "run":
		err = wantArgs(sub, rest, 2)
		if err == nil {
			err = Run(ctx, env, opts, rest[0], rest[1], stdout, stderr)
		}
	case "cleanup":
		err = wantArgs(sub, rest, 0)
		if err == nil {
			err = Cleanup(ctx, env, opts, stderr)
		}
	}
	if err == nil {
		return 0
	}
	report(sub, stderr, err)
	if env.Missing(jobenv.RunnerVars...) != nil && sub != "config" && sub != "cleanup" {
		return 2 // outside a runner: there are no runner exit codes to use
	}
	return ExitCode(env, err)
}

// report prints the error once. A failed script needs no ferry line in
// red: the script's own output says what went wrong; the runner prints the
// exit code.
func report(sub string, w io.Writer, err error) {
	var se *ScriptError
	if errors.As(err, &se) {
		return
	}
	if sub == "prepare" || sub == "run" {
		joblog.New(w).Errorf("%v", err)
		return
	}
	fmt.Fprintln(w, err)
}

func wantArgs(sub string, rest []string, n int) error {
	if len(rest) == n {
		return nil
	}
	if n == 0 {
		return fmt.Errorf("ferry %s: unexpected arguments %q (flags go before them?)", sub, rest)
	}
	return fmt.Errorf("ferry %s: want <script> <stage>, got %d argument(s) %q", sub, len(rest), rest)
}

// kubectl runs ferry's kubectl here (engine) or in the engine.
func (b Binary) kubectl(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if b.Kubectl != nil {
		return b.Kubectl(args, stdin, stdout, stderr)
	}
	if b.Handoff == nil {
		fmt.Fprintln(stderr, "ferry: this build has no kubectl")
		return 1
	}
	// kubectl's own flags are not ferry's: only the environment can move
	// the state root here.
	root := ""
	if o, _, err := ParseOptions("kubectl", nil, jobenv.FromOS().LookupEnv); err == nil {
		root = o.StateDir
	}
	err := b.Handoff(append([]string{"kubectl"}, args...), root)
	fmt.Fprintln(stderr, err)
	return 1
}
