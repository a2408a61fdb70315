package stages

import (
	"context"
	"flag"
	"sync"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// Job is what a feature hook gets to work with.
type Job struct {
	Env     *jobenv.Env         // runner process environment, job variables
	Payload *jobenv.JobResponse // JOB_RESPONSE_FILE; nil in Cleanup when the file is gone
	State   *jobstate.State     // the job's private state directory
	Log     *joblog.Logger      // the job log (redacted); the system log in Cleanup
	Options *Options            // parsed flags

	feature string        // the feature whose Prepare runs
	joins   []prepareJoin // work started by Prepare hooks, joined at its end
}

// prepareJoin is one piece of work a feature's Prepare left running.
type prepareJoin struct {
	feature string
	wait    func() error
}

// PrepareInBackground runs f in a goroutine, for a Prepare hook whose
// work need not hold up the features after it (the start of a process:
// os/exec waits for its exec; a state file's fsyncs). prepare waits for it
// before it returns, whatever the later features did, and f's error fails
// prepare as the hook's own error would, named by the feature. f must not
// change process-wide settings (umask, working dir) nor log to the job
// log. Prepare hooks only.
func (j *Job) PrepareInBackground(f func() error) {
	done := make(chan error, 1)
	go func() { done <- f() }()
	j.joins = append(j.joins, prepareJoin{j.feature, func() error { return <-done }})
}

// joinPrepare waits for every piece of work PrepareInBackground
// recorded, in order, and returns the first error.
func (j *Job) joinPrepare() error {
	var first error
	for _, w := range j.joins {
		if err := w.wait(); err != nil && first == nil {
			first = wrapFeature(w.feature, err)
		}
	}
	j.joins = nil
	return first
}

// Feature plugs into the stages. Nil functions are skipped.
type Feature struct {
	Name string
	// Flags registers the feature's own flags; they get FERRY_<NAME>
	// environment fallbacks and appear in `ferry help` like the core ones.
	Flags func(fs *flag.FlagSet)
	// Prepare runs after the state directory exists. An error stops the job,
	// classified by pkg/failure (failure.Build for the user's mistakes).
	Prepare func(ctx context.Context, j *Job) error
	// BeforeStage runs in `ferry run` before the stage scripts RunsBefore
	// accepts (all when RunsBefore is nil).
	BeforeStage func(ctx context.Context, j *Job, stage string) error
	// DuringStage runs in `ferry run` while the stage script runs (for the
	// stages RunsBefore accepts, after BeforeStage); the func it returns is
	// called once the script has ended. For what must reach the job log
	// while the script waits (the Docker holder's deploy lock line).
	DuringStage func(ctx context.Context, j *Job, stage string) (end func())
	// RunsBefore picks the stages BeforeStage runs before. Give it: ferry
	// then skips reading the job payload for every other stage.
	RunsBefore func(stage string) bool
	// Cleanup runs in `ferry cleanup`, even when prepare never ran; its
	// output reaches only the runner's system log.
	Cleanup func(ctx context.Context, j *Job) error
	// NeedsEngine tells whether this feature's hooks for `ferry <sub>`
	// (and, for run, the stage name) call the Engine, given the parsed
	// flags. Nil means never. Err on the side of true: a wrong false is a
	// failed job, a wrong true costs one exec.
	NeedsEngine func(sub, stage string) bool
}

var (
	featuresMu sync.Mutex
	features   []Feature
)

// Register adds a feature; call it from init() in stages/feature_<name>.go.
// Features run in registration order (file name order within the package).
func Register(f Feature) {
	featuresMu.Lock()
	defer featuresMu.Unlock()
	features = append(features, f)
}

// Features returns the registered features.
func Features() []Feature {
	featuresMu.Lock()
	defer featuresMu.Unlock()
	return append([]Feature(nil), features...)
}
