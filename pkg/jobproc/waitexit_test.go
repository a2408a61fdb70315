package jobproc

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// TestWaitExit: true when the watched process ends (a real child, killed),
// at once for a pid already gone or reused (wrong start time), false when
// the context ends first.
func TestWaitExit(t *testing.T) {
	start := func() *exec.Cmd {
		c := exec.Command("sleep", "30")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	c := start()
	st, err := StartTime(c.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	o := Owner{PID: c.Process.Pid, Start: st}
	got := make(chan bool, 1)
	go func() { got <- o.WaitExit(context.Background()) }()
	select {
	case <-got:
		t.Fatal("WaitExit returned while the process runs")
	case <-time.After(100 * time.Millisecond):
	}
	c.Process.Kill()
	c.Wait()
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("WaitExit: false for a process that ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitExit did not notice the end within 5 s")
	}
	if !o.WaitExit(context.Background()) || !WaitPIDExit(context.Background(), c.Process.Pid) {
		t.Error("a pid already gone is not reported ended")
	}

	c2 := start()
	if !(Owner{PID: c2.Process.Pid, Start: 1}).WaitExit(context.Background()) {
		t.Error("a pid whose start time differs (reused) is not reported ended")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if WaitPIDExit(ctx, c2.Process.Pid) {
		t.Error("WaitPIDExit: true when the context ended first")
	}
}
