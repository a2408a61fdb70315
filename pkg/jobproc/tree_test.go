package jobproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startTree starts `bash -c script` in its own process group, with this
// test process the subreaper of its orphans (as `ferry run` is), and
// returns it with the pids the script wrote to pidFile, one per line.
func startTree(t *testing.T, script string, env ...string) (*exec.Cmd, []int) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("subreaper: %v", err)
	}
	pidFile := filepath.Join(t.TempDir(), "pids")
	cmd := exec.Command("bash", "-c", script, "tree", pidFile)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(pidFile)
		if strings.HasSuffix(string(b), "done\n") {
			var pids []int
			for _, f := range strings.Fields(string(b)) {
				if p, err := strconv.Atoi(f); err == nil {
					pids = append(pids, p)
				}
			}
			return cmd, pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tree did not start within 10s: %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A daemonized grandchild (setsid, its parent gone) is still found under
// the subreaper, and ReapJob ends it along with the process group.
func TestReapJobEndsSetsidOrphans(t *testing.T) {
	cmd, pids := startTree(t, `setsid bash -c 'echo $$ >> "$1"; exec sleep 300' x "$1" & sleep 300 & echo $! >> "$1"; sleep 0.2; echo done >> "$1"; wait`)
	if len(pids) != 2 {
		t.Fatalf("want 2 pids, got %v", pids)
	}
	found := map[int]bool{}
	for _, p := range Descendants(os.Getpid()) {
		found[p] = true
	}
	for _, p := range append(pids, cmd.Process.Pid) {
		if !found[p] {
			t.Errorf("Descendants misses %d (found %v)", p, found)
		}
	}
	ReapJob(cmd.Process.Pid, time.Now().Add(2*time.Second), true)
	_ = cmd.Wait()
	for _, p := range pids {
		if syscall.Kill(p, 0) == nil && !isZombie(p) {
			t.Errorf("process %d survived ReapJob", p)
		}
	}
	if left := Descendants(os.Getpid()); len(left) != 0 {
		t.Errorf("descendants left after ReapJob: %v", left)
	}
}

// KillMarked finds a process by its environment mark even when it has left
// the process group, and leaves unmarked processes alone.
func TestKillMarked(t *testing.T) {
	key := "test-" + strconv.Itoa(os.Getpid())
	cmd, pids := startTree(t, `setsid sleep 300 & echo $! >> "$1"; env -u FERRY_TEST_MARK sleep 300 & echo $! >> "$1"; sleep 0.3; echo done >> "$1"; wait`, "FERRY_TEST_MARK="+key)
	if len(pids) != 2 {
		t.Fatalf("want 2 pids, got %v", pids)
	}
	marked, unmarked := pids[0], pids[1]
	if n := KillMarked("FERRY_TEST_MARK", key); n < 2 { // bash itself and the setsid'd sleep
		t.Errorf("KillMarked killed %d processes, want at least 2", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(marked, 0) == nil && !isZombie(marked) && time.Now().Before(deadline) {
		reapZombies()
		time.Sleep(10 * time.Millisecond)
	}
	if syscall.Kill(marked, 0) == nil && !isZombie(marked) {
		t.Errorf("marked process %d survived", marked)
	}
	if syscall.Kill(unmarked, 0) != nil || isZombie(unmarked) {
		t.Errorf("unmarked process %d was killed", unmarked)
	}
	_ = syscall.Kill(unmarked, syscall.SIGKILL)
	_ = cmd.Wait()
}

// A command name with spaces and parentheses does not shift the fields.
func TestStatFieldsOddName(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "a) b (c")
	if err := os.Symlink("/bin/sleep", odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ppid, state, ok := statOf(cmd.Process.Pid)
	if !ok || ppid != os.Getpid() || state == 'Z' {
		t.Errorf("statOf = %d %c %v, want ppid %d", ppid, state, ok, os.Getpid())
	}
	if _, err := startTime(cmd.Process.Pid); err != nil {
		t.Errorf("startTime: %v", err)
	}
}
