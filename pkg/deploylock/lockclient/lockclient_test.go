package lockclient

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
)

// A later call of the job skips asking the holder only on a mark made by
// the holder process that still runs, for a namespace name.
func TestHeldMark(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, SocketFile)
	me := os.Getpid()
	start, err := jobproc.StartTime(me)
	if err != nil {
		t.Fatal(err)
	}
	if Held(sock, "prod") {
		t.Fatal("held without a mark")
	}
	if err := MarkHeld(dir, "prod", jobproc.Owner{PID: me, Start: start}); err != nil {
		t.Fatal(err)
	}
	if !Held(sock, "prod") {
		t.Fatal("not held with the running holder's mark")
	}
	if Held(sock, "staging") {
		t.Fatal("the mark of prod holds staging")
	}
	UnmarkHeld(dir, "prod")
	if Held(sock, "prod") {
		t.Fatal("held after the mark was removed")
	}

	// A holder that has ended (its pid possibly reused): not held.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := MarkHeld(dir, "prod", jobproc.Owner{PID: cmd.Process.Pid, Start: start}); err != nil {
		t.Fatal(err)
	}
	if Held(sock, "prod") {
		t.Fatal("held on the mark of a holder that ended")
	}
	// Another process with the mark's pid (a start time that differs).
	if err := MarkHeld(dir, "prod", jobproc.Owner{PID: me, Start: start + 1}); err != nil {
		t.Fatal(err)
	}
	if Held(sock, "prod") {
		t.Fatal("held on a mark whose start time is not the process's")
	}

	UnmarkHeld(dir, "prod")

	// Never a path: a namespace that is not a name is neither marked nor
	// looked up.
	for _, ns := range []string{"../x", "a/b", "", "UPPER", "-x", "x."} {
		if err := MarkHeld(dir, ns, jobproc.Owner{PID: me, Start: start}); err != nil {
			t.Errorf("namespace %q: %v", ns, err)
		}
		if Held(sock, ns) {
			t.Errorf("namespace %q: held", ns)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("marks left: %v", ents)
	}
}

// A holder that ended before cleanup is reported with its log; a running
// one, or none ever started, is not.
func TestEndedEarly(t *testing.T) {
	dir := t.TempDir()
	if _, ended := EndedEarly(dir); ended {
		t.Fatal("no holder was started, yet it ended early")
	}
	if err := jobproc.WritePIDFile(filepath.Join(dir, PIDFile), os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, ended := EndedEarly(dir); ended {
		t.Fatal("a running holder ended early")
	}
	cmd := exec.Command("sleep", "0.05")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := jobproc.WritePIDFile(filepath.Join(dir, PIDFile), cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if err := os.WriteFile(filepath.Join(dir, LogFile), []byte("ferry: deploy lock holder: bad config: EOF\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, ended := EndedEarly(dir)
	if !ended || log != "ferry: deploy lock holder: bad config: EOF" {
		t.Fatalf("ended %v, log %q", ended, log)
	}
}

// StartAfterExit's holder waits, as a shell, until the process that
// started it has closed its end of the pipe (prepare's exit; here the test
// closes it), then becomes the holder program in place: same pid, so the
// PID file still names it.
func TestStartAfterExitWaitsForTheStarter(t *testing.T) {
	if _, err := os.Stat(waitShell); err != nil {
		t.Skip("no /bin/sh")
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "holder")
	// $1 is the subcommand, $2 the lock dir.
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho \"$1\" > \"$2/started\"\nexec sleep 30\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: filepath.Join(dir, "lock"), ID: "test"}
	if err := StartAfterExit(exe, cfg); err != nil {
		t.Fatal(err)
	}
	pid, ok := HolderPID(cfg.Dir)
	if !ok {
		t.Fatal("no running holder in the PID file")
	}
	defer Stop(cfg.Dir)
	started := filepath.Join(cfg.Dir, "started")
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(started); err == nil {
		t.Fatal("the holder program ran while its starter still runs")
	}
	exitPipesMu.Lock()
	for _, w := range exitPipes {
		w.Close() // what the starter's exit does
	}
	exitPipes = nil
	exitPipesMu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(started); err == nil && string(b) == Subcommand+"\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder program did not run within 5 s of its starter's exit")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p, ok := HolderPID(cfg.Dir); !ok || p != pid {
		t.Fatalf("PID file: %d running %v, want %d still running", p, ok, pid)
	}
	Stop(cfg.Dir)
	for deadline := time.Now().Add(5 * time.Second); jobproc.Running(pid); {
		if time.Now().After(deadline) {
			t.Fatalf("holder %d still runs 5 s after Stop", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
