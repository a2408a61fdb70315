package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/pkg/redact"
	"gitlab.com/ferry-ci/ferry/pkg/version"
)

// Prepare is prepare_exec: it creates the job's private state directory,
// sweeps abandoned ones, and runs the features' Prepare hooks. stdout is the
// job log.
func Prepare(ctx context.Context, env *jobenv.Env, o *Options, stdout io.Writer) error {
	start := time.Now()
	if err := env.RequireRunner(); err != nil {
		return err
	}
	payload, err := env.Payload()
	if err != nil {
		return err // the runner's own file: a system failure
	}
	st, ident, err := openState(env, o)
	if err != nil {
		return err
	}
	if err := stateDirOutsideBuilds(st.Dir(), env, o); err != nil {
		return err
	}
	st.Timeout = time.Duration(payload.RunnerInfo.Timeout) * time.Second
	if err := st.Create(); err != nil {
		return err
	}
	// The runner masks masked variables only as they are; ferry also masks
	// their encoded forms in everything a job prints.
	if err := st.AddSecrets(payload.MaskedValues()...); err != nil {
		return err
	}
	out, closeOut, err := redactedOutput(st, stdout)
	if err != nil {
		return err
	}
	defer closeOut()
	log := joblog.New(out)
	end := log.Section("prepare_ferry", "Preparing the job with "+DriverName+" "+version.Version, true)
	if c := env.IdentityConflicts(ident); len(c) > 0 {
		// Said once, here: run and cleanup use the payload silently.
		log.Warnf("ferry: job variables %s disagree with the runner's job payload: ferry keys this job on the payload (job %d)", strings.Join(c, ", "), ident.ID)
	}
	ready := time.Since(start)
	swept, sweepErr := jobstate.SweepStale(st.Root(), o.StaleAfter)
	log.Infof("Using %s %s: job state ready in %s", DriverName, version.Version, joblog.Duration(ready))
	if len(swept) > 0 {
		log.Infof("Removed %d stale job state dir(s) older than %s", len(swept), o.StaleAfter)
	}
	if sweepErr != nil {
		// A leftover of another job must not fail this one.
		log.Warnf("%v", sweepErr)
	}
	end()
	j := &Job{Env: env, Payload: payload, State: st, Log: log, Options: o}
	err = prepareFeatures(ctx, j)
	// Work a feature left running (the deploy lock holder's fork/exec) is
	// done before prepare returns, whether or not a later feature failed:
	// its PID file must be there for cleanup, and its error is prepare's.
	if jerr := j.joinPrepare(); err == nil {
		err = jerr
	}
	return err
}

// prepareFeatures runs the features' Prepare hooks in registration order.
func prepareFeatures(ctx context.Context, j *Job) error {
	for _, f := range Features() {
		if f.Prepare == nil {
			continue
		}
		if ctx.Err() != nil {
			return errInterrupted
		}
		j.feature = f.Name
		if err := f.Prepare(ctx, j); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w (%v)", errInterrupted, wrapFeature(f.Name, err))
			}
			return wrapFeature(f.Name, err)
		}
	}
	return nil
}

// errInterrupted is prepare's error when SIGTERM (the runner's cancel, job
// timeout or 19.0's prepare_timeout) stopped it.
var errInterrupted = errors.New("ferry: prepare interrupted (SIGTERM): this job's state is removed, nothing of it is left on the host")

// undoInterruptedPrepare runs cleanup right away after a prepare that SIGTERM
// stopped, so nothing half-made stays even if the runner never gets to
// cleanup_exec (it always runs it; then it finds nothing). Cleanup's own
// lines go to the runner's system log only, as with cleanup_exec: here
// there is none, so only its failure is reported.
func undoInterruptedPrepare(env *jobenv.Env, o *Options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Cleanup(ctx, env, o, io.Discard); err != nil {
		return fmt.Errorf("ferry: prepare interrupted (SIGTERM), and removing what it made failed: %w", err)
	}
	return nil
}

// openState opens (without creating) the job's state directory, named by
// the job's identity from JOB_RESPONSE_FILE (never by CUSTOM_ENV_CI_JOB_ID,
// which the job can set).
func openState(env *jobenv.Env, o *Options) (*jobstate.State, jobenv.Identity, error) {
	if o.StateDir == "" {
		return nil, jobenv.Identity{}, fmt.Errorf("ferry: HOME is not set: give --state-dir")
	}
	ident, err := env.Identity(o.ServerURL)
	if err != nil {
		return nil, ident, err
	}
	if err := checkProjectDir(env); err != nil {
		return nil, ident, err
	}
	st, err := jobstate.Open(o.StateDir, ident)
	if err != nil {
		return nil, ident, err
	}
	st.ProjectDir, _ = env.JobVar("CI_PROJECT_DIR")
	return st, ident, nil
}

// redactedOutput wraps w with a redactor masking the job's secrets and their
// encoded forms. The returned func flushes it.
func redactedOutput(st *jobstate.State, w io.Writer) (io.Writer, func(), error) {
	set, err := secretSet(st)
	if err != nil {
		return nil, nil, err
	}
	rw := set.Writer(w)
	return rw, func() { rw.Close() }, nil
}

// secretSet compiles the job's secrets and their encoded forms.
func secretSet(st *jobstate.State) (*redact.Set, error) {
	secrets, err := st.Secrets()
	if err != nil {
		return nil, err
	}
	return redact.NewSet(redact.AllVariants(secrets...)), nil
}

// wrapFeature names the feature in its error unless the error already
// starts with "ferry:"; the classification (failure.Build) is kept.
func wrapFeature(name string, err error) error {
	if s := err.Error(); len(s) >= 6 && s[:6] == "ferry:" {
		return err
	}
	return fmt.Errorf("ferry: %s: %w", name, err)
}

// stateDirOutsideBuilds refuses a state dir (or the engine cache beside it)
// inside the builds root or the project directory: artifacts, caches and
// image builds would see it.
func stateDirOutsideBuilds(dir string, env *jobenv.Env, o *Options) error {
	var dirs []string
	if b, err := filepath.Abs(o.BuildsDir); err == nil && o.BuildsDir != "" {
		dirs = append(dirs, b)
	}
	if pd, _ := env.JobVar("CI_PROJECT_DIR"); pd != "" {
		dirs = append(dirs, filepath.Clean(pd))
	}
	for _, d := range dirs {
		if within(dir, d) {
			return fmt.Errorf("ferry: --state-dir %s is inside the build directory %s: job state must stay out of it", o.StateDir, d)
		}
	}
	return nil
}
