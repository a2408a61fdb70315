package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/failure"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/pkg/sandbox"
	"gitlab.com/ferry-ci/ferry/pkg/tmpns"
)

// HostEnvAllowList are the host variables a job script gets from ferry's own
// environment (plus --pass-env names). Everything else, in particular
// CUSTOM_ENV_*, JOB_RESPONSE_FILE and BUILD_*, is left out: the stage script
// exports the job's variables itself.
var HostEnvAllowList = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "TMPDIR", "TERM"}

// hostEnvPrefixes are allowed by prefix (locale categories).
var hostEnvPrefixes = []string{"LC_"}

// neverPassed cannot be let through even with --pass-env: they belong to the
// runner's conversation with ferry, not to the job.
func neverPassed(k string) bool {
	return strings.HasPrefix(k, "CUSTOM_ENV_") || strings.HasPrefix(k, "BUILD_") ||
		k == "JOB_RESPONSE_FILE" || k == "SYSTEM_FAILURE_EXIT_CODE"
}

// JobMarkVar is set to the job key in the environment of every job script.
const JobMarkVar = "FERRY_JOB_KEY"

// ScriptError is a stage script that exited non-zero.
type ScriptError struct {
	Stage string
	Code  int
}

func (e *ScriptError) Error() string {
	return fmt.Sprintf("ferry: stage %s: script exited with code %d", e.Stage, e.Code)
}

// Run is run_exec: it runs `bash <script>` for any stage name, with the
// job's environment, its output redacted, in its own process group, and
// makes sure no process of it outlives the stage. ctx ending (SIGTERM or
// SIGINT to ferry) terminates the script: SIGTERM to all its processes, then
// SIGKILL after --grace-period.
//
// A non-zero script exit is written to BUILD_EXIT_CODE_FILE and returned as
// a build failure (*ScriptError inside). A build failure of ferry's own (a
// refused dotenv report) writes 1 there: runners 17.9+ keep one such file per
// job and would otherwise report a code an earlier stage left in it.
func Run(ctx context.Context, env *jobenv.Env, o *Options, script, stage string, stdout, stderr io.Writer) (err error) {
	defer func() { err = recordExitCode(env, err) }()
	if err := env.RequireRunner(); err != nil {
		return err
	}
	st, _, err := openState(env, o)
	if err != nil {
		return err
	}
	if u, ok := env.JobVar("CI_SERVER_URL"); ok {
		st.UseLegacyDir(u) // prepared before payload-keyed dirs: upgraded with the job in flight
	}
	if err := st.Check(); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ferry: job state %s does not exist: prepare_exec did not run or the dir was removed", st.Dir())
		}
		return err
	}
	if err := st.CheckFormat(); err != nil {
		return err // a downgrade with the job in flight
	}
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("ferry: stage %s: script: %w", stage, err)
	}
	// One compiled set for both streams: building the automaton is most
	// of a redactor's cost, and ferry pays it once per stage.
	set, err := secretSet(st)
	if err != nil {
		return err
	}
	outW, errW := set.Writer(stdout), set.Writer(stderr)
	defer outW.Close()
	defer errW.Close()
	log := joblog.New(outW)

	j := &Job{Env: env, State: st, Log: log, Options: o}
	for _, f := range Features() {
		if f.BeforeStage == nil || (f.RunsBefore != nil && !f.RunsBefore(stage)) {
			continue
		}
		// The payload is parsed only for a hook that runs: real ones are
		// tens of kilobytes, and most stages need none of it.
		if j.Payload == nil {
			if j.Payload, err = env.Payload(); err != nil {
				return err
			}
		}
		if err := f.BeforeStage(ctx, j, stage); err != nil {
			return wrapFeature(f.Name, err)
		}
	}
	overrides, err := st.Env()
	if err != nil {
		return err
	}
	if err := writeGitlabEnv(env, st, overrides, log); err != nil {
		return err
	}
	childEnv := ChildEnv(env, o, st, overrides)
	box, err := jobSandbox(env, o, st)
	if err != nil {
		return err
	}
	defer box.Close()

	// The runner's death ends the job as a cancel would (docs/executor.md,
	// "When the runner dies"); no cleanup_exec follows, so ferry does its work.
	ctx, runnerGone := jobproc.WatchParent(ctx)
	// A dead runner's pipes: ferry must live on to stop the job, so a
	// write there is an error (EPIPE), not a SIGPIPE death. A handler, not
	// SIG_IGN, so the script still gets the default disposition.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	mark, err := jobproc.OpenMark(st.Path(jobproc.MarkFile))
	if err != nil {
		return err
	}
	defer mark.Close()

	var ends []func()
	for _, f := range Features() {
		if f.DuringStage == nil || (f.RunsBefore != nil && !f.RunsBefore(stage)) {
			continue
		}
		if end := f.DuringStage(ctx, j, stage); end != nil {
			ends = append(ends, end)
		}
	}
	held := box.Held(log)
	defer held.Close()
	code, err := runScript(ctx, script, childEnv, box.Watch(outW), box.Watch(errW), o.GracePeriod, box.Rules(), box.NS(), held, mark)
	for _, end := range ends {
		end()
	}
	box.Report(log)
	if runnerGone() {
		cerr := Cleanup(context.Background(), env, o, errW)
		return errors.Join(err, fmt.Errorf("ferry: stage %s: the runner exited mid-job: job stopped, its state removed", stage), cerr)
	}
	if err != nil {
		return err
	}
	if code == 0 {
		return nil
	}
	return failure.Build(&ScriptError{Stage: stage, Code: code})
}

// recordExitCode writes the job's exit code for a build failure to
// BUILD_EXIT_CODE_FILE: the script's own code, or 1 when ferry failed the
// stage itself. If it cannot, the runner would report whatever the file
// holds, so that is a system failure.
func recordExitCode(env *jobenv.Env, err error) error {
	f := env.BuildExitCodeFile
	if f == "" || !failure.IsBuild(err) {
		return err
	}
	code := 1
	var se *ScriptError
	if errors.As(err, &se) {
		code = se.Code
	}
	if werr := os.WriteFile(f, []byte(strconv.Itoa(code)+"\n"), 0o600); werr != nil {
		return fmt.Errorf("ferry: BUILD_EXIT_CODE_FILE %s: %w (after: %v)", f, werr, err)
	}
	return err
}

// ChildEnv builds the job script's process environment: the allow-listed
// host variables and --pass-env names, the env.json overrides,
// PATH=<state>/bin:$PATH and FERRY_STATE_DIR.
func ChildEnv(env *jobenv.Env, o *Options, st *jobstate.State, overrides []jobstate.EnvVar) []string {
	m := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := m[k]; !ok {
			order = append(order, k)
		}
		m[k] = v
	}
	for _, k := range HostEnvAllowList {
		if v, ok := env.LookupEnv(k); ok {
			set(k, v)
		}
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		for _, p := range hostEnvPrefixes {
			if strings.HasPrefix(k, p) {
				if v, ok := env.LookupEnv(k); ok {
					set(k, v)
				}
			}
		}
	}
	for _, k := range o.PassEnv {
		if neverPassed(k) {
			continue
		}
		if v, ok := env.LookupEnv(k); ok {
			set(k, v)
		}
	}
	for _, e := range overrides {
		set(e.Key, e.Value)
	}
	path := m["PATH"]
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	set("PATH", st.BinDir()+string(os.PathListSeparator)+path)
	set("FERRY_STATE_DIR", st.Root())
	if sandboxOpts.on {
		// The sandbox hides the host-wide caches and the runner's temp
		// dir: the job gets its own (docs/threat-model.md).
		set("TMPDIR", st.Path(jobTmpDir))
		set("FERRY_DISCOVERY_CACHE_DIR", filepath.Join(st.Path(jobCacheDir), "discovery"))
	}
	// Every process of the job inherits this mark; cleanup finds by it what
	// survived a ferry that was killed before it could stop the job.
	set(JobMarkVar, filepath.Base(st.Dir()))
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+m[k])
	}
	return out
}

// subreaperOnce makes ferry the reaper of every orphan of the job: a
// daemonized or setsid'd grandchild is reparented to ferry instead of init,
// so ferry can still find it in /proc and kill it.
var subreaperOnce sync.Once

// runScript runs `bash script` and returns its exit code (128+signal when a
// signal ended it). The error is only for ferry's own failures.
//
// With ns, bash starts in a private /tmp (pkg/tmpns): with held, through
// EnterProgram into the namespaces prepare's holder made, from the thread
// box restricts; without, through ferry's re-exec, which makes them and
// restricts itself with box (ferry's thread is not).
func runScript(ctx context.Context, script string, environ []string, stdout, stderr io.Writer, grace time.Duration, box *sandbox.Ruleset, ns *tmpns.Spec, held *heldTmp, mark *os.File) (int, error) {
	subreaperOnce.Do(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })

	// Own pipes, not exec's copying goroutines: a background process holding
	// the pipe must not keep Wait (and so ferry) waiting.
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("ferry: pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return 0, fmt.Errorf("ferry: pipe: %w", err)
	}
	cmd := exec.Command("bash", script)
	cmd.Env = environ
	cmd.Stdin = nil
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.ExtraFiles = make([]*os.File, jobproc.MarkFD-2)
	if mark != nil {
		// Every process of the job inherits the mark (env -i cannot drop
		// it); the descriptors below it are closed in the child.
		cmd.ExtraFiles[jobproc.MarkFD-3] = mark
	}
	if ns != nil && held != nil {
		// The namespaces prepare's holder made: entered by a tiny
		// program started, like bash would be, from the restricted thread.
		if err := enterHeldCommand(cmd, held, script); err != nil {
			for _, f := range []*os.File{outR, outW, errR, errW} {
				f.Close()
			}
			return 0, err
		}
	} else if ns != nil {
		nsFile, err := privateTmpCommand(cmd, *ns, script, box)
		if err != nil {
			for _, f := range []*os.File{outR, outW, errR, errW} {
				f.Close()
			}
			return 0, err
		}
		if nsFile != nil {
			defer nsFile.Close()
		}
		box = nil // the re-exec restricts itself
	}
	// bash starts on a thread of its own, restricted by the job's sandbox
	// (box nil: not restricted); Pdeathsig is tied to that thread, which
	// lives until bash exits, so the script dies with ferry even if the
	// runner SIGKILLs ferry before the grace period is over.
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		waited <- sandbox.OnThread(box, func() error {
			err := cmd.Start()
			started <- err
			if err != nil {
				return err
			}
			return cmd.Wait()
		})
	}()
	var serr error
	select {
	case serr = <-started:
		if serr != nil {
			serr = fmt.Errorf("ferry: start bash %s: %w", script, serr)
		}
	case serr = <-waited: // the sandbox could not be entered: bash never started
		if serr == nil {
			serr = errors.New("ferry: sandbox: bash did not start")
		}
	}
	if serr != nil {
		for _, f := range []*os.File{outR, outW, errR, errW} {
			f.Close()
		}
		return 0, serr
	}
	outW.Close()
	errW.Close()
	var copying sync.WaitGroup
	copying.Add(2)
	go func() { defer copying.Done(); io.Copy(stdout, outR) }()
	go func() { defer copying.Done(); io.Copy(stderr, errR) }()

	pgid := cmd.Process.Pid
	done := make(chan struct{})
	var termMu sync.Mutex
	var termAt time.Time // when the job was told to stop; zero if never
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		termMu.Lock()
		termAt = time.Now()
		termMu.Unlock()
		jobproc.SignalJob(pgid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			jobproc.SignalJob(pgid, syscall.SIGKILL)
		}
	}()
	werr := <-waited
	close(done)

	// What is left of the job: its process group and every orphan that the
	// subreaper setting brought back to ferry. They get what is left of the
	// grace period since the SIGTERM (the whole period after a normal exit).
	termMu.Lock()
	deadline, cancelled := termAt.Add(grace), !termAt.IsZero()
	termMu.Unlock()
	if !cancelled {
		deadline = time.Now().Add(grace)
	}
	jobproc.ReapJob(pgid, deadline, !cancelled)

	// All writers are gone: the copies end at EOF. If something we could not
	// kill still holds a pipe, stop waiting after a moment.
	copied := make(chan struct{})
	go func() { copying.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
		outR.Close()
		errR.Close()
		<-copied
	}
	outR.Close()
	errR.Close()

	if werr == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, fmt.Errorf("ferry: wait for bash %s: %w", script, werr)
}
