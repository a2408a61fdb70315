// Package ferrybuild builds the ferry binary for tests with
// scripts/build.sh, the same way a release is built (the engine embedded), so
// that process tests run what ships. The e2e module uses it too.
package ferrybuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// RepoRoot is ferry's main module root (this file is internal/ferrybuild/).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build builds ferry into dir/ferry and returns its path.
func Build(dir string) (string, error) {
	out := filepath.Join(dir, "ferry")
	cmd := exec.Command("bash", filepath.Join(RepoRoot(), "scripts", "build.sh"), "-o", out, "-v", "test")
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ferry with scripts/build.sh: %w\n%s", err, b)
	}
	return out, nil
}

// BuildEngine builds only the engine (executor/engine) into dir/ferry-engine,
// for tests and benchmarks of the engine's own code (kubectl apply).
func BuildEngine(dir string) (string, error) {
	out := filepath.Join(dir, "ferry-engine")
	cmd := exec.Command("go", "build", "-o", out, "./executor/engine")
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ferry-engine: %w\n%s", err, b)
	}
	return out, nil
}

var (
	dirOnce   sync.Once
	sharedDir string
	dirErr    error

	sharedOnce sync.Once
	sharedBin  string
	sharedErr  error
)

// SharedDir is a temporary directory for the test binary's builds, created
// once; RemoveShared deletes it (call it after m.Run: cluster.Main does).
func SharedDir() (string, error) {
	dirOnce.Do(func() { sharedDir, dirErr = os.MkdirTemp("", "ferry-bin-") })
	return sharedDir, dirErr
}

// Shared builds ferry once per test binary, in SharedDir.
func Shared() (string, error) {
	sharedOnce.Do(func() {
		dir, err := SharedDir()
		if err != nil {
			sharedErr = err
			return
		}
		sharedBin, sharedErr = Build(dir)
	})
	return sharedBin, sharedErr
}

// RemoveShared deletes SharedDir and what was built there.
func RemoveShared() {
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
}
