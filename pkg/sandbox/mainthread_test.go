package sandbox

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// init locks the main goroutine to the main thread (the thread group
// leader), so that TestMain below runs there, as `ferry run`'s main
// goroutine may.
func init() { runtime.LockOSThread() }

// mainThreadResult is what OnThread did when called on the main thread,
// found by TestMain before any test runs.
var mainThreadResult struct {
	checked       bool
	ranOnLeader   bool
	signalled     bool
	leaderBlocked bool
}

func TestMain(m *testing.M) {
	if abi, err := Probe(); err == nil && abi >= 6 {
		checkOnMainThread()
	}
	os.Exit(m.Run())
}

func checkOnMainThread() {
	dir, err := os.MkdirTemp("", "sandbox-main-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	r, err := Policy{Hide: []string{dir}}.Build()
	if err != nil {
		panic(err)
	}
	defer r.Close()
	mainThreadResult.checked = true
	// Called directly, not through a new goroutine: this goroutine is on
	// the leader thread and locked there.
	errc := make(chan error, 1)
	onThread(r, func() error {
		mainThreadResult.ranOnLeader = unix.Gettid() == unix.Getpid()
		kill := exec.Command("bash", "-c", "kill -CONT "+strconv.Itoa(os.Getpid()))
		// Output to a pipe: the policy does not let the job write /dev/null.
		_, err := kill.CombinedOutput()
		mainThreadResult.signalled = err == nil
		return nil
	}, errc)
	if err := <-errc; err != nil {
		panic(err)
	}
	// The leader itself must still be free: it writes where the job may not.
	mainThreadResult.leaderBlocked = os.WriteFile(dir+"/leader", []byte("x"), 0o600) != nil
}

// TestOnThreadNeverRestrictsTheLeader: signals and ptrace aimed at ferry's
// pid are checked against the domain of its thread group leader. Were the
// leader the restricted thread, the job could stop or kill `ferry run`
// (kill $PPID) or, where Yama allows, read its memory.
func TestOnThreadNeverRestrictsTheLeader(t *testing.T) {
	if !mainThreadResult.checked {
		t.Skip("no Landlock with scopes (ABI 6) on this kernel")
	}
	if mainThreadResult.ranOnLeader {
		t.Error("fn ran on the main thread (the thread group leader)")
	}
	if mainThreadResult.signalled {
		t.Error("the sandboxed job signalled ferry's pid")
	}
	if mainThreadResult.leaderBlocked {
		t.Error("the main thread was left restricted")
	}
}
