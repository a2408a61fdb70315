package stages

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
)

// No process of a job outlives it, even when the runner dies
// (docs/executor.md, "When the runner dies"): prepare records which runner
// process owns the job, and removes at once what is left of jobs whose
// runner is gone.
func init() {
	Register(Feature{Name: "orphans", Prepare: orphansPrepare})
}

func orphansPrepare(_ context.Context, j *Job) error {
	if o, err := jobproc.Parent(); err == nil {
		if err := jobproc.WriteOwner(j.State.Path(jobproc.OwnerFile), o); err != nil {
			return err
		}
	}
	jobs := filepath.Dir(j.State.Dir())
	ents, err := os.ReadDir(jobs)
	if err != nil {
		return nil // the sweep is best effort: another job's leftovers must not fail this one
	}
	removed, killed := 0, 0
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(jobs, e.Name())
		if dir == j.State.Dir() || !e.IsDir() { // IsDir: a planted symlink is not followed
			continue
		}
		gone, err := jobproc.OwnerGone(filepath.Join(dir, jobproc.OwnerFile))
		if err != nil || !gone {
			continue
		}
		killed += jobproc.KillHolders(filepath.Join(dir, jobproc.MarkFile)) + jobproc.KillMarked(JobMarkVar, e.Name())
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		removed++
	}
	if removed > 0 {
		j.Log.Infof("Removed the state of %d job(s) whose runner is gone (%d leftover process(es) killed)", removed, killed)
	}
	if err := errors.Join(errs...); err != nil {
		j.Log.Warnf("ferry: removing the state of jobs whose runner is gone: %v", err)
	}
	return nil
}
