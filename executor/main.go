// Command ferry is a GitLab Runner custom executor. This file only parses
// the command line and wires the stages together; the work is in
// gitlab.com/ferry-ci/ferry/stages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/version"
	"gitlab.com/ferry-ci/ferry/stages"
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

const usageHead = `ferry: a GitLab Runner custom executor for shell jobs that deploy

Usage:
  ferry config  [flags]                    config_exec: prints the JSON the runner reads
  ferry prepare [flags]                    prepare_exec: creates the job's private state
  ferry run     [flags] <script> <stage>   run_exec: runs one stage script with bash
  ferry cleanup [flags]                    cleanup_exec: removes everything of the job
  ferry kubectl <args...>                  kubectl-compatible client (also as "kubectl")
  ferry version | help

Every stage accepts every flag; each flag falls back to the environment
variable shown (the flag wins). Flags come right after the subcommand.

Flags:
`

const usageTail = `
Exit codes: BUILD_FAILURE_EXIT_CODE when the job's script or input failed,
SYSTEM_FAILURE_EXIT_CODE when ferry or the host failed, 2 when ferry is run
outside a runner. See docs/executor.md.
`

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	stages.PrintDefaults(w)
	fmt.Fprint(w, usageTail)
}

func run(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(argv) > 0 && filepath.Base(argv[0]) == "kubectl" {
		return kubectlMain(argv[1:], stdin, stdout, stderr)
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
		return kubectlMain(args, stdin, stdout, stderr)
	case "config", "prepare", "run", "cleanup":
	default:
		fmt.Fprintf(stderr, "ferry: unknown command %q (try: ferry help)\n", sub)
		return 2
	}

	env := jobenv.FromOS()
	opts, rest, err := stages.ParseOptions(sub, args, env.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return stages.ExitCode(env, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	switch sub {
	case "config":
		err = wantArgs(sub, rest, 0)
		if err == nil {
			err = stages.WriteConfig(env, opts, stdout)
		}
	case "prepare":
		err = wantArgs(sub, rest, 0)
		if err == nil {
			err = stages.Prepare(ctx, env, opts, stdout)
		}
	case "run":
		err = wantArgs(sub, rest, 2)
		if err == nil {
			err = stages.Run(ctx, env, opts, rest[0], rest[1], stdout, stderr)
		}
	case "cleanup":
		err = wantArgs(sub, rest, 0)
		if err == nil {
			err = stages.Cleanup(ctx, env, opts, stderr)
		}
	}
	if err == nil {
		return 0
	}
	report(sub, stderr, err)
	if env.Missing(jobenv.RunnerVars...) != nil && sub != "config" && sub != "cleanup" {
		return 2 // outside a runner: there are no runner exit codes to use
	}
	return stages.ExitCode(env, err)
}

// report prints the error once. A failed script needs no ferry line in
// red: the script's own output says what went wrong; the runner prints the
// exit code.
func report(sub string, w io.Writer, err error) {
	var se *stages.ScriptError
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
