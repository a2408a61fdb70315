package enginelock

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestLeaseProgram runs the hand-made lease program as a process: it lives
// while renewed (SIGUSR1) and exits within its TTL when not, at once on
// SIGTERM.
func TestLeaseProgram(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("SKIPPED: the lease program is x86-64 code")
	}
	p := filepath.Join(t.TempDir(), "lease")
	if err := os.WriteFile(p, leaseProgram(600*time.Millisecond), 0o755); err != nil {
		t.Fatal(err)
	}
	start := func() (*exec.Cmd, chan error) {
		c := exec.Command(p)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		return c, done
	}
	c, done := start()
	t0 := time.Now()
	for time.Since(t0) < 2*time.Second {
		time.Sleep(200 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("exited while renewed after %s: %v", time.Since(t0), err)
		default:
		}
		c.Process.Signal(syscall.SIGUSR1)
	}
	t1 := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
		if d := time.Since(t1); d < 300*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("exited %s after the last renewal, want about 600ms", d)
		}
	case <-time.After(5 * time.Second):
		c.Process.Kill()
		t.Fatal("not renewed, still running after 5s")
	}
	c, done = start()
	time.Sleep(50 * time.Millisecond)
	c.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit on SIGTERM: %v", err)
		}
	case <-time.After(300 * time.Millisecond):
		c.Process.Kill()
		t.Fatal("SIGTERM did not end it")
	}
}
