package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"gitlab.com/ferry-ci/ferry/pkg/redact"
)

// Cleanup is cleanup_exec: features' Cleanup hooks, then the extra paths of
// cleanup.json, ferry's lines in GITLAB_ENV and the state directory itself.
// It runs after every job and after every failed prepare attempt, so it
// copes with a state dir that was never created or is already gone. Every
// error is reported (joined); none stops the rest. stderr is the runner's
// system log, never the job log.
//
// The job is the one JOB_RESPONSE_FILE names. A state dir another job's
// token made, or one below a directory that is not ferry's own (a symlinked
// <state>/jobs), is left alone: no hook runs, no process is killed, nothing
// is removed.
func Cleanup(ctx context.Context, env *jobenv.Env, o *Options, stderr io.Writer) error {
	if env.JobResponseFile == "" {
		return env.RequireRunner()
	}
	st, _, err := openState(env, o)
	if err != nil {
		return err // no payload: no job of ours can have state (prepare needs it too)
	}
	if u, ok := env.JobVar("CI_SERVER_URL"); ok {
		st.UseLegacyDir(u) // prepared before payload-keyed dirs: upgraded with the job in flight
	}
	if err := st.Check(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	secrets, _ := st.Secrets() // best effort: the dir may be gone
	out := redact.NewWriter(stderr, redact.AllVariants(secrets...))
	defer out.Close()
	log := joblog.New(out)
	if err := st.CheckFormat(); err != nil {
		// Removing the dir needs no understanding of it; what a newer
		// ferry recorded elsewhere may be left behind.
		log.Warnf("%v: cleaning up what this ferry knows of", err)
	}

	var payload *jobenv.JobResponse
	if env.JobResponseFile != "" {
		payload, _ = env.Payload() // nil when the runner already removed it
	}
	j := &Job{Env: env, Payload: payload, State: st, Log: log, Options: o}
	var errs []error
	for _, f := range Features() {
		if f.Cleanup == nil {
			continue
		}
		if err := f.Cleanup(ctx, j); err != nil {
			errs = append(errs, wrapFeature(f.Name, err))
		}
	}
	// Processes of the job still alive now escaped a killed `ferry run`.
	// By the mark descriptor first (env -i cannot drop it), then by the
	// environment mark.
	if n := jobproc.KillHolders(st.Path(jobproc.MarkFile)) + jobproc.KillMarked(JobMarkVar, filepath.Base(st.Dir())); n > 0 {
		log.Warnf("ferry: killed %d leftover process(es) of job %s", n, filepath.Base(st.Dir()))
	}
	paths, err := st.CleanupPaths()
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range paths {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("ferry: cleanup %s: %w", p, err))
		}
	}
	if err := removeGitlabEnv(env, st); err != nil {
		errs = append(errs, err)
	}
	if err := st.Remove(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
