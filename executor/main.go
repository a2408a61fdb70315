// Command ferry is a GitLab Runner custom executor, the binary config.toml's
// config/prepare/run/cleanup_exec name. It does not link k8s.io/client-go,
// so that every stage starts in about a millisecond; calls that need
// Kubernetes (prepare with credentials or the kubectl link, kubectl, the
// dotenv Secrets store) are handed to the engine, executor/engine, which a
// release build embeds in this binary (scripts/build.sh). The work is in
// gitlab.com/ferry-ci/ferry/stages.
package main

import (
	"fmt"
	"os"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/stages"
)

func main() {
	os.Exit(stages.Main(os.Args, os.Stdin, os.Stdout, os.Stderr, stages.Binary{Handoff: handoff}))
}

func handoff(argv []string, stateRoot string) error {
	// stderr is the job log in prepare and run: where an admin would look.
	warn := func(msg string) { fmt.Fprintln(os.Stderr, msg) }
	p, err := enginebin.Locate(stateRoot, jobenv.FromOS().LookupEnv, warn)
	if err != nil {
		return err
	}
	// The engine links the job's ssh shims to this small binary, which
	// starts fastest (stages.SelfVar).
	if self, err := os.Executable(); err == nil {
		os.Setenv(stages.SelfVar, self)
	}
	return enginebin.Exec(p, argv)
}
