// Package jobproc keeps a job's processes from outliving it when the runner
// dies: it records which runner process owns a job (pid and start time, so a
// reused pid is not taken for the owner), notices the runner's death through
// a pidfd, and finds a job's leftover processes by a mark they cannot drop
// by clearing their environment.
//
// The mark is an open file description: `ferry run` hands every stage
// script <job state>/procmark on a high descriptor number (MarkFD); every
// process of the job inherits it through fork and exec, `env -i`, `setsid`,
// `nohup` and double forks included. Only a process that closes its
// inherited descriptors drops it (docs/threat-model.md says when that
// matters: only if ferry itself is SIGKILLed too, since while ferry lives it
// is the child subreaper of every orphan of the job).
package jobproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MarkFD is the descriptor number the job's mark is passed on: high, so a
// script's own `exec 3>file` does not replace it by accident.
const MarkFD = 63

// MarkFile is the name of the mark file in a job's state dir.
const MarkFile = "procmark"

// OwnerFile is the name of the owner record in a job's state dir.
const OwnerFile = "owner.json"

// Owner identifies a runner process across pid reuse.
type Owner struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // clock ticks after boot (/proc/<pid>/stat field 22)
}

// Parent is the calling process's parent: the runner, for ferry's stages.
func Parent() (Owner, error) {
	pid := os.Getppid()
	start, err := startTime(pid)
	if err != nil {
		return Owner{}, err
	}
	return Owner{PID: pid, Start: start}, nil
}

// Alive reports whether the owner process still runs (a zombie counts as
// gone; a pid now held by another process too).
func (o Owner) Alive() bool {
	if o.PID <= 1 {
		return false
	}
	start, err := startTime(o.PID)
	return err == nil && start == o.Start
}

// startTime reads field 22 of /proc/<pid>/stat; a zombie is reported as an
// error.
func startTime(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("jobproc: /proc/%d/stat: malformed", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("jobproc: process %d is a zombie", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// WriteOwner records o in path (0600).
func WriteOwner(path string, o Owner) error {
	b, _ := json.Marshal(o)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("ferry: record the job's runner: %w", err)
	}
	return nil
}

// ReadOwner reads a record WriteOwner made.
func ReadOwner(path string) (Owner, error) {
	var o Owner
	b, err := os.ReadFile(path)
	if err != nil {
		return o, err
	}
	if err := json.Unmarshal(b, &o); err != nil || o.PID <= 0 {
		return o, fmt.Errorf("ferry: %s: not an owner record", path)
	}
	return o, nil
}

// WatchParent returns a context that ends when parent ends or when this
// process's parent (the runner) exits, and a func telling whether it was
// the parent's death. It waits on a pidfd through Go's poller: no thread,
// no polling. Where pidfds are missing (Linux < 5.3) it watches nothing.
func WatchParent(parent context.Context) (context.Context, func() bool) {
	var gone atomic.Bool
	never := func() bool { return gone.Load() }
	ppid := os.Getppid()
	if ppid <= 1 {
		return parent, never
	}
	fd, err := unix.PidfdOpen(ppid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return parent, never
	}
	if os.Getppid() != ppid { // died before the pidfd pinned it
		unix.Close(fd)
		ctx, cancel := context.WithCancel(parent)
		gone.Store(true)
		cancel()
		return ctx, never
	}
	f := os.NewFile(uintptr(fd), "pidfd:runner")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return parent, never
	}
	ctx, cancel := context.WithCancel(parent)
	go func() {
		<-ctx.Done()
		f.Close() // ends the wait below
	}()
	go func() {
		first := true
		// Readable means the process exited.
		err := rc.Read(func(uintptr) bool {
			if first {
				first = false
				return false
			}
			return true
		})
		if err == nil && ctx.Err() == nil {
			gone.Store(true)
			cancel()
		}
	}()
	return ctx, never
}

// KillHolders SIGKILLs every process (of any user ferry may signal) that
// holds a descriptor on the file at path (or on it after its removal),
// round after round until none is left, and returns how many it killed.
// self is never killed.
func KillHolders(path string) int {
	return KillFound(func() []int { return Holders(path) })
}

// KillFound SIGKILLs the processes find lists (never ferry itself), round
// after round, since a process may fork while its siblings die, until a
// round kills none (at most 10 rounds), and returns how many it killed.
func KillFound(find func() []int) int {
	self := os.Getpid()
	killed := 0
	for round := 0; round < 10; round++ {
		n := 0
		for _, pid := range find() {
			if pid != self && syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
		killed += n
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return killed
}

// Holders lists the live processes holding a descriptor on path (or on the
// file path named before it was removed).
func Holders(path string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if holds(pid, path) {
			if _, err := startTime(pid); err == nil { // not a zombie
				out = append(out, pid)
			}
		}
	}
	return out
}

func holds(pid int, path string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	// The mark's own number first: the usual case, one readlink.
	if l, err := os.Readlink(dir + strconv.Itoa(MarkFD)); err == nil && isMark(l, path) {
		return true
	}
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if l, err := os.Readlink(dir + fd.Name()); err == nil && isMark(l, path) {
			return true
		}
	}
	return false
}

func isMark(link, path string) bool {
	return link == path || link == path+" (deleted)"
}

// OpenMark opens (creating it if needed) the mark file at path for a stage
// script to inherit.
func OpenMark(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ferry: job mark: %w", err)
	}
	return f, nil
}

// ErrNoOwner is returned by OwnerGone for a job without an owner record.
var ErrNoOwner = errors.New("no owner record")

// OwnerGone reports whether the job whose owner record is at path lost its
// runner. A job without a record (prepared by an older ferry, or being
// prepared right now) is not judged: ErrNoOwner.
func OwnerGone(path string) (bool, error) {
	o, err := ReadOwner(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, ErrNoOwner
	}
	if err != nil {
		return false, err
	}
	return !o.Alive(), nil
}
