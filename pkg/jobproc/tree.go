package jobproc

// The job's process tree: signalling it, waiting for it to go, and finding
// what is left of it. ferry is the child subreaper of every stage script, so
// every orphan of the job is reparented to ferry and found under it.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SignalJob signals the script's process group (pgid) and every other descendant
// of ferry (setsid'd or daemonized processes have left the group).
func SignalJob(pgid int, sig syscall.Signal) {
	_ = syscall.Kill(-pgid, sig)
	for _, pid := range Descendants(os.Getpid()) {
		_ = syscall.Kill(pid, sig)
	}
}

// ReapJob ends every process the script left behind: SIGTERM (unless they
// got it already), up to the deadline to exit, then SIGKILL. Zombies
// reparented to ferry are reaped.
func ReapJob(pgid int, deadline time.Time, sendTerm bool) {
	left := func() bool {
		// With ferry a child subreaper, every orphan of the job is ferry's
		// child: no children at all (ECHILD) means no descendants, and the
		// /proc walk is skipped in the common case.
		haveChildren := reapZombies()
		if syscall.Kill(-pgid, 0) == nil {
			return true
		}
		return haveChildren && len(Descendants(os.Getpid())) > 0
	}
	if !left() {
		return
	}
	if sendTerm {
		SignalJob(pgid, syscall.SIGTERM)
	}
	for time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		if !left() {
			return
		}
	}
	// SIGKILL until nothing is left: a killed parent's children are
	// reparented to ferry and show up in the next round.
	for i := 0; i < 100 && left(); i++ {
		SignalJob(pgid, syscall.SIGKILL)
		time.Sleep(5 * time.Millisecond)
	}
}

// reapZombies collects exited children without blocking and reports whether
// ferry still has children (false only on ECHILD: none at all).
func reapZombies() bool {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.ECHILD) {
			return false
		}
		if pid <= 0 || err != nil {
			return true
		}
	}
}

// Descendants lists the live (not zombie) descendants of pid, read from
// /proc/<pid>/task/*/children, falling back to a scan of /proc/*/stat.
func Descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	seen := map[int]bool{pid: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		kids, ok := childrenOf(p)
		if !ok {
			return scanDescendants(pid)
		}
		for _, k := range kids {
			if seen[k] {
				continue
			}
			seen[k] = true
			queue = append(queue, k)
			if !isZombie(k) {
				out = append(out, k)
			}
		}
	}
	return out
}

func childrenOf(pid int) ([]int, bool) {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, !errors.Is(err, os.ErrNotExist) || pid != os.Getpid()
	}
	var kids []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + t.Name() + "/children")
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && pid == os.Getpid() {
				return nil, false // kernel without CONFIG_PROC_CHILDREN
			}
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids, true
}

// scanDescendants walks every process's parent link.
func scanDescendants(root int) []int {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	zombie := map[int]bool{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, state, ok := statOf(pid)
		if ok {
			parent[pid] = ppid
			zombie[pid] = state == 'Z'
		}
	}
	var out []int
	for pid := range parent {
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == root {
				if !zombie[pid] {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out
}

func isZombie(pid int) bool {
	_, state, ok := statOf(pid)
	return !ok || state == 'Z' || state == 'X'
}

// ParentPID is pid's parent (a zombie's too), from /proc/<pid>/stat.
func ParentPID(pid int) (int, bool) {
	ppid, _, ok := statOf(pid)
	return ppid, ok
}

// statOf reads the parent pid and state of pid from /proc/<pid>/stat.
func statOf(pid int) (ppid int, state byte, ok bool) {
	f, err := statFields(pid)
	if err != nil || len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err == nil
}

// statFields are the fields of /proc/<pid>/stat after the command name
// (f[0] is field 3, the state). The name is in parentheses and may hold
// spaces and parentheses itself: parse after the last ')'.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return nil, fmt.Errorf("jobproc: /proc/%d/stat: malformed", pid)
	}
	return strings.Fields(string(b[i+2:])), nil
}

// KillMarked SIGKILLs every process of ferry's user whose environment holds
// <markVar>=<key> (FERRY_JOB_KEY): what is left of a job whose `ferry run` was itself
// SIGKILLed (the runner's graceful_kill_timeout shorter than
// --grace-period). It returns how many it killed.
func KillMarked(markVar, key string) int {
	mark := []byte("\x00" + markVar + "=" + key + "\x00")
	return KillFound(func() []int {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
			if err != nil || !bytes.Contains(append([]byte{0}, b...), mark) || isZombie(pid) {
				continue
			}
			pids = append(pids, pid)
		}
		return pids
	})
}
