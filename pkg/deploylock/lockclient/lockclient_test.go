package lockclient

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

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
	if err := MarkHeld(dir, "prod", me, start); err != nil {
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
	if err := MarkHeld(dir, "prod", cmd.Process.Pid, start); err != nil {
		t.Fatal(err)
	}
	if Held(sock, "prod") {
		t.Fatal("held on the mark of a holder that ended")
	}
	// Another process with the mark's pid (a start time that differs).
	if err := MarkHeld(dir, "prod", me, start+1); err != nil {
		t.Fatal(err)
	}
	if Held(sock, "prod") {
		t.Fatal("held on a mark whose start time is not the process's")
	}

	UnmarkHeld(dir, "prod")

	// Never a path: a namespace that is not a name is neither marked nor
	// looked up.
	for _, ns := range []string{"../x", "a/b", "", "UPPER", "-x", "x."} {
		if err := MarkHeld(dir, ns, me, start); err != nil {
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
