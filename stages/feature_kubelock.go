package stages

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/deploylock/lockclient"
	"gitlab.com/ferry-ci/ferry/pkg/docker/jobsocket"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// lockFlags are the runner admin's --deploy-lock* settings (docs/deploy-safety.md).
var lockFlags struct {
	Enabled bool
	Lease   time.Duration
}

// lockDirName is the lock holder's directory in the job state dir.
const lockDirName = "lock"

// The file name sorts after feature_kube.go: prepare starts the holder
// only once the kube feature has written the job's kubeconfig.
func init() {
	Register(Feature{
		Name: "deploylock",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&lockFlags.Enabled, "deploy-lock", true, "one deploy at a time per target: the job's first mutating kubectl call takes a Lease in the cluster (its environment in the namespace, else the namespace), a Docker deploy a lock container on the engine (its compose project or stack), held until the job ends (docs/deploy-safety.md)")
			fs.DurationVar(&lockFlags.Lease, "deploy-lock-lease", 15*time.Second, "the deploy lock's lease: a holder that vanished (host lost) loses the lock after this long; renewed every third of it")
		},
		Prepare: lockPrepare,
		Cleanup: func(_ context.Context, j *Job) error {
			dir := j.State.Path(lockDirName)
			if log, ended := lockclient.EndedEarly(dir); ended {
				// Its log goes with the dir: say here why the job's
				// kubectl found nobody to answer.
				j.Log.Warnf("ferry: deploy lock: this job's lock holder had ended before cleanup; its log:\n%s", log)
			}
			return lockclient.Stop(dir)
		},
		// The holder is started only for a job with a kubeconfig of ferry's,
		// which only the kube feature writes, in the engine: without a
		// credential source there is nothing to lock, and prepare must stay
		// in the small binary (TestOnlyPrepareNeedsTheEngine).
		NeedsEngine: func(sub, _ string) bool {
			return sub == "prepare" && lockFlags.Enabled && !kubeSourcesOff(kubeFlags.Sources)
		},
	})
}

// lockPrepare starts the job's lock holder when the job has Kubernetes
// credentials of ferry's: it takes the lock for the job's kubectl, renews
// it outside the job script (whose processes die at the end of every
// stage) and releases it at cleanup.
func lockPrepare(_ context.Context, j *Job) error {
	if !lockFlags.Enabled {
		return nil
	}
	kubeconfig := j.State.Path(jobstate.KubeconfigFile)
	if _, err := os.Stat(kubeconfig); err != nil {
		return nil // no credentials of ferry's: nothing to deploy with
	}
	if lockFlags.Lease < 3*time.Second {
		return fmt.Errorf("ferry: --deploy-lock-lease %s: at least 3s", lockFlags.Lease)
	}
	jrf := j.Env.JobResponseFile
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	timeout := j.State.Timeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	nonce := make([]byte, 4)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	vars := j.Env.JobVars()
	id := j.State.Job()
	jobID := strconv.FormatInt(id.ID, 10)
	cfg := lockclient.Config{
		Dir:             j.State.Path(lockDirName),
		Kubeconfig:      kubeconfig,
		ID:              jobstate.Key(id.ServerURL, jobID) + "-" + hex.EncodeToString(nonce),
		Project:         vars["CI_PROJECT_PATH"],
		Pipeline:        vars["CI_PIPELINE_ID"],
		Job:             jobID,
		Environment:     vars["CI_ENVIRONMENT_NAME"],
		LeaseDuration:   lockFlags.Lease,
		Deadline:        time.Now().Add(timeout),
		UID:             os.Getuid(),
		JobResponseFile: jrf,
	}
	if id.ID == 0 {
		return errors.New("ferry: deploy lock: no job id")
	}
	// Finding the runner (a walk up /proc), the holder's fork/exec (os/exec
	// waits for the exec of the engine) and the env.json write (two
	// fsyncs) took 3-17 ms of prepare here (BenchmarkLockPrepareCost).
	// They overlap the features after this one (the sandbox's, with the
	// private /tmp holder's start); prepare waits for them before it
	// returns, so the holder's PID file is there for cleanup and a failure
	// fails prepare as before.
	j.PrepareInBackground(func() error {
		runner, err := jobsocket.RunnerOf(os.Getpid(), jrf)
		if err != nil {
			return fmt.Errorf("ferry: deploy lock: cannot find the runner process: %w", err)
		}
		cfg.RunnerPID = runner
		return lockclient.StartAfterExit(exe, cfg)
	})
	j.PrepareInBackground(func() error {
		return j.State.AddEnv(lockclient.SocketEnv, cfg.Dir+"/"+lockclient.SocketFile, false)
	})
	return nil
}
