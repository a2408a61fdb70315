// Package ferrybuild builds the ferry binary for tests with
// scripts/build.sh, the same way a release is built (the engine embedded), so
// that process tests run what ships. The e2e module uses it too.
package ferrybuild

import (
	"errors"
	"fmt"
	"io/fs"
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

// CoverDirVar names the directory for coverage data of the ferry processes
// that tests start: when it is set, Build builds ferry (and its engine) with
// coverage instrumentation and CoverEnv tells those processes where to write.
// docs/bad-input.md shows how to read the result.
const CoverDirVar = "FERRY_COVERDIR"

// BinaryVar names a prebuilt ferry binary that Shared uses instead of building.
const BinaryVar = "FERRY_BINARY"

// CoverEnv is what a ferry process started by a test needs in its
// environment to write coverage data: nothing unless FERRY_COVERDIR is set.
// GOCOVERDIR is passed on to the job's scripts too (--pass-env), so that the
// job's kubectl (the engine) writes there as well instead of warning that it
// cannot.
func CoverEnv() []string {
	dir := os.Getenv(CoverDirVar)
	if dir == "" {
		return nil
	}
	return []string{"GOCOVERDIR=" + dir, "FERRY_PASS_ENV=GOCOVERDIR"}
}

// Build builds ferry into dir/ferry and returns its path.
func Build(dir string) (string, error) { return BuildVersion(dir, "test") }

// BuildVersion builds ferry stamped with version into dir/ferry (upgrade
// and package tests build two versions, or a version to find again).
func BuildVersion(dir, version string) (string, error) {
	out := filepath.Join(dir, "ferry")
	args := []string{filepath.Join(RepoRoot(), "scripts", "build.sh"), "-o", out, "-v", version}
	if os.Getenv(CoverDirVar) != "" {
		args = append(args, "-c")
	}
	cmd := exec.Command("bash", args...)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ferry with scripts/build.sh: %w\n%s", err, b)
	}
	return out, nil
}

// BuildPackaged is BuildVersion that also writes the embedded engine and
// small kubectl into dir/lib (scripts/build.sh -l), as a package installs
// them in /usr/lib/ferry. It returns the ferry binary and that directory.
func BuildPackaged(dir, version string) (bin, lib string, err error) {
	bin, lib = filepath.Join(dir, "ferry"), filepath.Join(dir, "lib")
	cmd := exec.Command("bash", filepath.Join(RepoRoot(), "scripts", "build.sh"), "-o", bin, "-v", version, "-l", lib)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building ferry with scripts/build.sh -l: %w\n%s", err, b)
	}
	return bin, lib, nil
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

// BuildKubectl builds the job's kubectl as prepare leaves it: the small
// kubectl (executor/kubectl) as dir/ferry-kubectl and the engine beside it
// (dir/ferry-engine), which it execs for what it does not do itself. It
// returns the small kubectl's path: link a `kubectl` to it.
func BuildKubectl(dir string) (string, error) {
	if _, err := BuildEngine(dir); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "ferry-kubectl")
	cmd := exec.Command("go", "build", "-o", out, "./executor/kubectl")
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ferry-kubectl: %w\n%s", err, b)
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

// Shared builds ferry once per test binary, in SharedDir, or returns
// FERRY_BINARY when that names a prebuilt one.
func Shared() (string, error) {
	if b := os.Getenv(BinaryVar); b != "" {
		return b, nil
	}
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

// KubectlBinDir builds the job's kubectl into dir (BuildKubectl) and
// returns dir/bin, which holds only `kubectl`, linked to it as prepare
// links a job's bin/kubectl: put it first on a test's PATH.
func KubectlBinDir(dir string) (string, error) {
	kubectl, err := BuildKubectl(dir)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o700); err != nil {
		return "", fmt.Errorf("kubectl bin dir: %w", err)
	}
	link := filepath.Join(bin, "kubectl")
	if err := os.Symlink(kubectl, link); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("kubectl bin dir: %w", err)
	}
	return bin, nil
}

// ReferenceKubectlVar names a kubectl binary that ReferenceKubectl returns
// instead of building one (a test of ferry against another kubectl release).
const ReferenceKubectlVar = "FERRY_REFERENCE_KUBECTL"

var (
	refOnce sync.Once
	refBin  string
	refErr  error
)

// ReferenceKubectl is the real kubectl that differential tests compare ferry
// with: kubectl built from k8s.io/kubectl at the version ferry links
// (tools/kubectl, `make kubectl`, scripts/kubectl.sh) into bin/kubectl of the
// checkout, once per test binary (the script returns at once when it is
// there already), so that the comparison is like with like on any machine.
// Never a kubectl found on PATH: a host's kubectl of another minor version
// words its messages differently.
func ReferenceKubectl() (string, error) {
	if b := os.Getenv(ReferenceKubectlVar); b != "" {
		return b, nil
	}
	refOnce.Do(func() {
		out := filepath.Join(RepoRoot(), "bin", "kubectl")
		cmd := exec.Command("bash", filepath.Join(RepoRoot(), "scripts", "kubectl.sh"), "-o", out)
		cmd.Dir = RepoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			refErr = fmt.Errorf("building the reference kubectl with scripts/kubectl.sh: %w\n%s", err, b)
			return
		}
		refBin = out
	})
	return refBin, refErr
}
