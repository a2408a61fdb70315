package jobproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A PID file names its process while it runs, and stops naming it once it
// is gone or when the record's start time is not the running process's (a
// reused pid).
func TestPIDFile(t *testing.T) {
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	path := filepath.Join(t.TempDir(), "holder.pid")
	if err := WritePIDFile(path, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if pid, ok := ReadPIDFile(path); !ok || pid != cmd.Process.Pid {
		t.Fatalf("ReadPIDFile = %d %v, want %d true", pid, ok, cmd.Process.Pid)
	}
	st, _ := StartTime(cmd.Process.Pid)
	reused := filepath.Join(t.TempDir(), "reused.pid")
	if err := os.WriteFile(reused, []byte(strconv.Itoa(cmd.Process.Pid)+" "+strconv.FormatUint(st+1, 10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := ReadPIDFile(reused); ok {
		t.Error("a record with another start time names the running process")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if _, ok := ReadPIDFile(path); ok {
		t.Error("the record still names a process that is gone")
	}
}

// Terminate kills a process that ignores SIGTERM once the wait is over.
func TestTerminateEscalates(t *testing.T) {
	cmd := startReady(t, "trap '' TERM; echo ready; exec sleep 300")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	start := time.Now()
	Terminate(cmd.Process.Pid, 200*time.Millisecond)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the process survived Terminate")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("SIGKILL came after %v, before the wait was over", d)
	}
}

// Terminate returns once a process that honours SIGTERM has ended, without
// killing it: it ended of its own accord (exit 0 from its trap), long
// before the wait was over.
func TestTerminateWaitsForTheEnd(t *testing.T) {
	cmd := startReady(t, "trap 'kill $!; exit 0' TERM; echo ready; sleep 300 & wait")
	Terminate(cmd.Process.Pid, 30*time.Second)
	if Running(cmd.Process.Pid) {
		t.Fatal("Terminate returned while the process runs")
	}
	err := cmd.Wait()
	if err != nil {
		t.Fatalf("the process did not end by its own trap (killed?): %v", err)
	}
}

// startReady starts a bash script and returns once it printed "ready" (its
// traps are set); the process is killed and reaped when the test ends.
func startReady(t *testing.T, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	return cmd
}
