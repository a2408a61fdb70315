package enginebin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestRemoveDeadUnpacks: an unpack killed half-way (SIGKILL, or SIGTERM
// with the default action while prepare hands off to the engine) leaves
// .unpack-<pid>-*; the next unpack removes it once that process is gone,
// and leaves a live writer's file and names it cannot read.
func TestRemoveDeadUnpacks(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { live.Process.Kill(); live.Wait() }()
	files := map[string]bool{ // name: kept
		".unpack-" + strconv.Itoa(dead.Process.Pid) + "-123": false,
		".unpack-" + strconv.Itoa(live.Process.Pid) + "-456": true,
		".unpack-" + strconv.Itoa(os.Getpid()) + "-789":      true,
		".unpack-987654321":             true, // an older ferry's name: the hourly sweep's
		"ferry-engine-0123456789abcdef": true,
	}
	for n := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removeDeadUnpacks(dir)
	for n, kept := range files {
		_, err := os.Stat(filepath.Join(dir, n))
		if (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", n, err == nil, kept)
		}
	}
}
