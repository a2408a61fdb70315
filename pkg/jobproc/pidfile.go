package jobproc

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A PID file records a per-job helper process (the Docker connection
// holder, the deploy lock holder) as "<pid> <start time>", so that cleanup
// finds it again and never signals a process that reused its pid.

// Record is o as PID files and the deploy lock's held marks keep it:
// "<pid> <start time>".
func (o Owner) Record() string {
	return strconv.Itoa(o.PID) + " " + strconv.FormatUint(o.Start, 10)
}

// ParseRecord reads a Record (surrounding white space allowed); ok is
// false for anything else, or a pid of 1 or less.
func ParseRecord(s string) (o Owner, ok bool) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Owner{}, false
	}
	pid, err1 := strconv.Atoi(f[0])
	st, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 1 {
		return Owner{}, false
	}
	return Owner{PID: pid, Start: st}, true
}

// WritePIDFile records process pid in path (0600).
func WritePIDFile(path string, pid int) error {
	st, err := startTime(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(Owner{PID: pid, Start: st}.Record()+"\n"), 0o600)
}

// ReadPIDFile returns the process path records, when it still runs: same
// start time, not a zombie.
func ReadPIDFile(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	o, ok := ParseRecord(string(b))
	return o.PID, ok && o.Alive() // Alive fails for a zombie
}

// Terminate sends pid SIGTERM, waits up to wait for it to go (a zombie
// counts as gone), then SIGKILLs it.
func Terminate(pid int, wait time.Duration) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// A pidfd wakes cleanup the moment the holder ends (it used to poll
	// every 5 ms, 2.5 ms lost on average); polling stays for a pid that
	// cannot be watched.
	if !WaitPIDExit(ctx, pid) && ctx.Err() == nil {
		for Running(pid) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if Running(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Running reports whether pid is a live process (not a zombie).
func Running(pid int) bool { return !isZombie(pid) }

// StartTime is when pid started (field 22 of /proc/<pid>/stat, clock ticks
// after boot); a zombie is an error.
func StartTime(pid int) (uint64, error) {
	st, err := startTime(pid)
	if err != nil {
		return 0, fmt.Errorf("jobproc: %w", err)
	}
	return st, nil
}
