package jobproc

import (
	"context"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// WaitExit returns true once the process o ends (at once when it is already
// gone, or when its pid now names another process), false when ctx ends
// first or the process cannot be watched. It waits on a pidfd, without
// polling: the holders that must end with their runner (the namespace and
// lock holders) each wait so.
func (o Owner) WaitExit(ctx context.Context) bool { return waitExit(ctx, o.PID, o.Alive) }

// WaitPIDExit is WaitExit for a bare pid, whose reuse it cannot tell.
func WaitPIDExit(ctx context.Context, pid int) bool { return waitExit(ctx, pid, nil) }

func waitExit(ctx context.Context, pid int, alive func() bool) bool {
	if pid <= 1 {
		return false
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return errors.Is(err, unix.ESRCH)
	}
	if alive != nil && !alive() { // checked once the pidfd pins the pid
		unix.Close(fd)
		return true
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return false
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		f.Close()
	}()
	// A pidfd polls readable when the process ends: the first call only
	// registers the wait.
	first := true
	err = rc.Read(func(uintptr) bool {
		if first {
			first = false
			return false
		}
		return true
	})
	close(done)
	return err == nil && ctx.Err() == nil
}
