package holder

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Subcommand is the hidden ferry subcommand that runs Main.
const Subcommand = "docker-holder"

// Start runs `<exe> docker-holder <dir>` in a new session, hands it cfg on
// its stdin and waits (up to wait, or until ctx ends: prepare got SIGTERM)
// for its Report. On a failed report, a timeout or ctx ending, the holder
// is gone and dir removed when Start returns.
//
// If the caller is killed (SIGKILL) while the holder starts, the holder is
// left to itself: it dies of SIGPIPE when it writes its report to the dead
// caller, or stops when its dir is removed (cleanup_exec, holder.Stop by
// holder.pid, which it writes first) or the runner process ends.
func Start(ctx context.Context, exe string, cfg Config, wait time.Duration) (Report, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return Report{}, fmt.Errorf("ferry: docker: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return Report{}, fmt.Errorf("ferry: docker: %w", err)
	}
	defer logf.Close()
	// The directory is an argument only so that ps shows whose holder it is.
	cmd := exec.Command(exe, Subcommand, cfg.Dir)
	// Nothing of the runner's conversation (CUSTOM_ENV_*, JOB_RESPONSE_FILE)
	// and no FERRY_JOB_KEY: the holder is not a process of the job script.
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return Report{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Report{}, err
	}
	if err := cmd.Start(); err != nil {
		return Report{}, fmt.Errorf("ferry: docker: start the connection holder: %w", err)
	}
	go func() {
		json.NewEncoder(in).Encode(cfg)
		in.Close()
	}()
	type result struct {
		r   Report
		err error
	}
	got := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadBytes('\n')
		var r Report
		if err == nil {
			err = json.Unmarshal(line, &r)
		}
		got <- result{r, err}
	}()
	var res result
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case res = <-got:
	case <-timer.C:
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(cfg.Dir)
		return Report{}, fmt.Errorf("ferry: docker: the connection holder did not answer within %s", wait)
	case <-ctx.Done():
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(cfg.Dir)
		return Report{}, fmt.Errorf("ferry: docker: interrupted while the connection holder started: %w", context.Cause(ctx))
	}
	if res.err != nil || res.r.Error != "" {
		cmd.Wait()
		if res.err != nil {
			os.RemoveAll(cfg.Dir)
			return Report{}, fmt.Errorf("ferry: docker: the connection holder failed: %v", res.err)
		}
		return res.r, errors.New(res.r.Error)
	}
	// Running: do not wait for it. Release lets it be reparented without
	// this process keeping a handle.
	cmd.Process.Release()
	return res.r, nil
}

// Stop tells the holder whose directory is dir to end (SIGTERM) and
// removes dir (the job's sockets, its DOCKER_CONFIG and captured logins)
// at once; safe when there is none. It does not wait for the holder: its
// end (closing the job's connections, releasing the job's deploy locks:
// one request per lock to each engine, over SSH, and closing the SSH
// connections) is off the job's path, as the Kubernetes lock holder's is,
// and bounded by the holder itself (shutdownBudget).
func Stop(dir string) error {
	if pid, ok := jobproc.ReadPIDFile(filepath.Join(dir, PIDFile)); ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("ferry: docker: remove %s: %w", dir, err)
	}
	return nil
}

// Running reports whether the holder of dir runs.
func Running(dir string) bool {
	_, ok := jobproc.ReadPIDFile(filepath.Join(dir, PIDFile))
	return ok
}
