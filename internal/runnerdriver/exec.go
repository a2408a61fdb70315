package runnerdriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
)

// callError is the runner's classification of a failed executor call.
type callError struct {
	build    bool // exit BUILD_FAILURE_EXIT_CODE: the user's fault
	exitCode int  // process exit code, -1 if none
	msg      string
}

func (e *callError) Error() string { return e.msg }

func isBuildError(err error) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.build
}

// callSpec is one executor invocation.
type callSpec struct {
	kind   string
	stage  string
	args   []string
	env    []string
	dir    string
	out    io.Writer // stdout and stderr share one pipe, as with the runner's trace
	stdout io.Writer // when set, stdout goes here instead (config_exec)
}

// run starts the ferry binary in its own process group and waits for it.
// When ctx ends first, the whole group gets SIGTERM, then SIGKILL after the
// graceful timeout, like the runner's process killer.
func (d *Driver) run(ctx context.Context, s callSpec) (Call, error) {
	c := Call{Kind: s.kind, Stage: s.stage, Args: append([]string(nil), s.args...), ExitCode: -1}
	start := time.Now()
	defer func() { c.Duration = time.Since(start) }()

	cmd := exec.Command(d.cfg.FerryBinary, s.args...)
	cmd.Dir = s.dir
	// A coverage build of ferry (FERRY_COVERDIR, tests only) is told where
	// to write; nothing otherwise.
	cmd.Env = append(s.env, ferrybuild.CoverEnv()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	// Our own pipes, so Wait returns when the process exits even if a
	// leftover child still holds them; we then notice and record that.
	type pipe struct {
		r    *os.File
		done chan struct{}
	}
	var pipes []pipe
	var childEnds []*os.File
	open := func(w io.Writer) (*os.File, error) {
		r, wf, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p := pipe{r: r, done: make(chan struct{})}
		go func() {
			_, _ = io.Copy(w, r)
			close(p.done)
		}()
		pipes = append(pipes, p)
		childEnds = append(childEnds, wf)
		return wf, nil
	}
	outW, err := open(s.out)
	if err != nil {
		return c, fmt.Errorf("creating pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, outW
	if s.stdout != nil {
		so, err := open(s.stdout)
		if err != nil {
			return c, fmt.Errorf("creating pipe: %w", err)
		}
		cmd.Stdout = so
	}
	drain := func() {
		for _, f := range childEnds {
			f.Close()
		}
		deadline := time.After(d.cfg.PipeWaitDelay)
		for _, p := range pipes {
			select {
			case <-p.done:
			case <-deadline:
				c.PipeHeldOpen = true
				p.r.Close()
				<-p.done
			}
			p.r.Close()
		}
	}

	if err := cmd.Start(); err != nil {
		drain()
		c.Err = err.Error()
		return c, &callError{exitCode: -1, msg: fmt.Sprintf("failed to start command: %v", err)}
	}
	for _, f := range childEnds {
		f.Close()
	}
	childEnds = nil

	waitCh := make(chan error, 1)
	go func() { waitCh <- cmd.Wait() }()

	var werr error
	select {
	case werr = <-waitCh:
	case <-ctx.Done():
		c.Signaled = true
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case werr = <-waitCh:
		case <-time.After(d.cfg.GracefulKillTimeout):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case werr = <-waitCh:
			case <-time.After(d.cfg.ForceKillTimeout):
				drain()
				c.Err = "failed to kill process, likely process is dormant"
				return c, &callError{exitCode: -1, msg: c.Err}
			}
		}
	}
	drain()

	if werr == nil {
		c.ExitCode = 0
		return c, nil
	}
	c.Err = werr.Error()
	var ee *exec.ExitError
	if !errors.As(werr, &ee) {
		return c, &callError{exitCode: -1, msg: werr.Error()}
	}
	c.ExitCode = ee.ExitCode() // -1 when killed by a signal
	switch c.ExitCode {
	case 1: // BUILD_FAILURE_EXIT_CODE
		return c, &callError{build: true, exitCode: 1, msg: werr.Error()}
	case 2: // SYSTEM_FAILURE_EXIT_CODE
		return c, &callError{exitCode: 2, msg: werr.Error()}
	case -1:
		return c, &callError{exitCode: -1, msg: werr.Error()}
	default:
		return c, &callError{exitCode: c.ExitCode, msg: fmt.Sprintf(
			"unknown Custom executor executable exit code %d; executable execution terminated with: %v", c.ExitCode, werr)}
	}
}
