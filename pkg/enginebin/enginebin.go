// Package enginebin finds ferry's engine: the build of ferry that links
// k8s.io/client-go (prepare's credentials check, kubectl, the dotenv Secrets
// store). The ferry binary the runner starts for every stage does not link
// it, because its package initialisers alone cost more than the rest of a
// stage; it hands the calls that need the engine over with execve.
//
// A release build (scripts/build.sh, `make build`) embeds the engine in the
// ferry binary, so a runner host still installs one file; the first call
// that needs it unpacks it into <state-dir>/engine/, once per engine build.
// With it comes the job's small kubectl (executor/kubectl, ferry-kubectl),
// which execs the engine for what it does not do itself: both are unpacked
// side by side under one sum, ferry-engine-SUM and ferry-kubectl-SUM, so
// each finds the other by name (Partner).
//
// A package (the .deb) also installs both, root-owned and under the same
// names, in <prefix>/lib/ferry/ beside <prefix>/bin/ferry. No job can write
// them, so ferry runs them as they are: nothing to unpack or compare at each
// prepare (Installed).
package enginebin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// EnvVar names an engine binary to use instead of the embedded one (an
// admin who installs ferry-engine separately, or a test).
const EnvVar = "FERRY_ENGINE"

// SiblingName is the engine's file name when it is installed beside ferry
// rather than embedded (`go build` without scripts/build.sh).
const SiblingName = "ferry-engine"

// DirName is the engine cache directory inside the state root.
const DirName = "engine"

// KeepUnused is how long an unpacked engine that no call has used stays:
// after an upgrade, running jobs may still call the old one through their
// bin/kubectl link.
const KeepUnused = 7 * 24 * time.Hour

var (
	embedded, embeddedKubectl string
	// EmbeddedSum is the sha256 (hex) of the embedded engine followed by
	// the embedded kubectl, stamped by scripts/build.sh with -ldflags -X so
	// that no call has to hash ~80 MB; computed on first unpack when a
	// build did not stamp it.
	EmbeddedSum string
)

// SetEmbedded registers the engine and the small kubectl compiled into this
// binary (called from the executor's init in builds with the ferry_embed
// tag). kubectl may be empty: jobs' kubectl is then the engine itself.
func SetEmbedded(engine, kubectl string) { embedded, embeddedKubectl = engine, kubectl }

// Embedded reports the size of the engine compiled into this binary (0:
// none).
func Embedded() int { return len(embedded) }

// Locate returns the path of the engine binary: $FERRY_ENGINE when set, else
// the embedded engine (unpacked under stateRoot/engine on first use), else
// ferry-engine beside the running executable. warn (may be nil) hears about
// an unpacked engine that had been modified and was unpacked again.
func Locate(stateRoot string, getenv func(string) (string, bool), warn func(string)) (string, error) {
	if p, ok := getenv(EnvVar); ok && p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("ferry: %s=%s: %w", EnvVar, p, err)
		}
		return p, nil
	}
	if embedded != "" {
		p, reason := Installed()
		if reason == "" {
			return p, nil
		}
		if p != "" && warn != nil {
			// Installed files ferry may not trust: say why, every time,
			// until an admin fixes the install.
			warn(fmt.Sprintf("ferry: not using the installed engine %s: %s; unpacking the embedded one into the state dir", p, reason))
		}
		if stateRoot == "" {
			return "", errors.New("ferry: HOME is not set: give --state-dir, where ferry unpacks its engine")
		}
		return unpack(stateRoot, warn)
	}
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		return "", fmt.Errorf("ferry: locating the ferry binary: %w", err)
	}
	p := filepath.Join(filepath.Dir(self), SiblingName)
	if err := checkExecutable(p); err != nil {
		return "", fmt.Errorf("ferry: this call needs ferry's engine, and this ferry was built without it (build with make build / scripts/build.sh) and found none at %s (%v); set %s to a ferry-engine binary", p, err, EnvVar)
	}
	return p, nil
}

// Exec replaces the process with the engine running argv (argv[0] included:
// "kubectl" selects its kubectl). It returns only on failure.
func Exec(path string, argv []string) error {
	if err := syscall.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("ferry: starting the engine %s: %w", path, err)
	}
	return nil
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// LibDir is where a package installs the engine and the small kubectl,
// relative to the directory of the ferry binary: /usr/bin/ferry ->
// /usr/lib/ferry.
const LibDir = "../lib/ferry"

// selfPath is the running ferry binary (a variable for tests).
var selfPath = func() (string, error) {
	p, err := os.Executable()
	if err == nil {
		p, err = filepath.EvalSymlinks(p)
	}
	return p, err
}

// embeddedSum is the sum naming the embedded pair's files (16 hex digits).
func embeddedSum() string {
	sum := EmbeddedSum
	if sum == "" {
		h := sha256.Sum256([]byte(embedded + embeddedKubectl))
		sum = hex.EncodeToString(h[:])
	}
	if len(sum) > 16 {
		sum = sum[:16]
	}
	return sum
}

// Installed returns the engine a package installed for this very ferry:
// LibDir/ferry-engine-SUM (and ferry-kubectl-SUM beside it), SUM being the
// embedded pair's, so a file of another version is never taken. reason is
// "" when ferry may run it without unpacking or comparing anything: it and
// its kubectl are regular executable files owned by root that only root
// can write, in directories (up to /) only root can change. Otherwise
// reason says why not; p is "" when there is no installed engine at all
// (make build's single file), which needs no word.
func Installed() (p, reason string) {
	if embedded == "" {
		return "", "this ferry carries no engine"
	}
	self, err := selfPath()
	if err != nil {
		return "", err.Error()
	}
	dir := filepath.Clean(filepath.Join(filepath.Dir(self), LibDir))
	sum := embeddedSum()
	p = filepath.Join(dir, SiblingName+"-"+sum)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		if _, derr := os.Stat(dir); derr != nil {
			return "", "no " + dir
		}
		// The directory is there, this version's engine is not: a
		// half-done upgrade, or a package of another build.
		return p, fmt.Sprintf("it is missing (%s holds no engine of this ferry's build %s)", dir, sum)
	}
	files := []string{p}
	if embeddedKubectl != "" {
		files = append(files, filepath.Join(dir, KubectlName+"-"+sum))
	}
	for _, f := range files {
		if err := rootOnly(f, false); err != nil {
			return p, err.Error()
		}
	}
	for d := dir; ; d = filepath.Dir(d) {
		if err := rootOnly(d, true); err != nil {
			return p, err.Error()
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return p, ""
}

// rootOnly checks that p is owned by root and that no one else can change
// it: a file no other user can write, or a directory no other user can add
// to or rename in (a sticky one, such as /tmp, lets only the owner of an
// entry rename or remove it).
func rootOnly(p string, isDir bool) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", p)
	}
	switch {
	case isDir && !fi.IsDir():
		return fmt.Errorf("%s is not a directory", p)
	case !isDir && !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", p)
	case !isDir && fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s is not executable", p)
	case st.Uid != 0:
		return fmt.Errorf("%s is owned by uid %d, not root", p, st.Uid)
	case fi.Mode().Perm()&0o022 != 0 && !(isDir && fi.Mode()&os.ModeSticky != 0):
		return fmt.Errorf("%s is writable by others than root (mode %v)", p, fi.Mode().Perm())
	}
	return nil
}

// unpack writes the embedded engine to stateRoot/engine/ferry-engine-<sum>,
// and the small kubectl to ferry-kubectl-<sum> beside it, unless they are
// there already, byte for byte. The directory is private (0700, owned by
// ferry's user) like the job state beside it, and each file appears under
// its final name only complete (rename), so concurrent jobs of one host can
// unpack at once and a killed unpack leaves no half binary to run. The
// kubectl comes first: a job links to it only after the engine is there.
//
// Jobs run as ferry's user and could rewrite the files; a binary modified
// by one job must not run the next job's prepare or kubectl with that
// job's credentials. So every call compares the files with the ones ferry
// carries (~80 MB from the page cache: a few milliseconds, cheaper than
// hashing them) and unpacks them again when they differ.
func unpack(stateRoot string, warn func(string)) (string, error) {
	sum := embeddedSum()
	dir := filepath.Join(stateRoot, DirName)
	if err := jobstate.EnsureDir(stateRoot, false); err != nil {
		return "", err
	}
	if err := jobstate.EnsureDir(dir, false); err != nil {
		return "", err
	}
	removeDeadUnpacks(dir)
	wrote := false
	if embeddedKubectl != "" {
		w, err := unpackFile(dir, KubectlName+"-"+sum, embeddedKubectl, warn)
		if err != nil {
			return "", err
		}
		wrote = wrote || w
	}
	name := SiblingName + "-" + sum
	w, err := unpackFile(dir, name, embedded, warn)
	if err != nil {
		return "", err
	}
	if wrote || w {
		sweep(dir, sum, inUse(stateRoot), time.Now())
	}
	return filepath.Join(dir, name), nil
}

// unpackFile makes dir/name hold exactly blob (see unpack); wrote reports
// whether it had to write it.
func unpackFile(dir, name, blob string, warn func(string)) (wrote bool, err error) {
	p := filepath.Join(dir, name)
	if fi, err := os.Lstat(p); err == nil {
		if fi.Mode().IsRegular() && fi.Size() == int64(len(blob)) && sameAs(p, blob) {
			// Used now: the sweep of unused engines must not take it.
			if time.Since(fi.ModTime()) > time.Hour {
				now := time.Now()
				_ = os.Chtimes(p, now, now)
			}
			return false, nil
		}
		if warn != nil {
			warn(fmt.Sprintf("ferry: the unpacked engine %s is not the one this ferry carries (modified since it was unpacked?): unpacking it again", p))
		}
	}
	// The pid in the name lets the next unpack remove what a killed one
	// left (removeDeadUnpacks).
	f, err := os.CreateTemp(dir, ".unpack-"+strconv.Itoa(os.Getpid())+"-*")
	if err != nil {
		return false, fmt.Errorf("ferry: unpacking the engine: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) (bool, error) {
		f.Close()
		os.Remove(tmp)
		return false, fmt.Errorf("ferry: unpacking the engine into %s: %w", dir, err)
	}
	if _, err := f.WriteString(blob); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o700); err != nil {
		return fail(err)
	}
	// A crash after the rename must not leave a file of the right size
	// but wrong bytes under the final name.
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("ferry: unpacking the engine into %s: %w", dir, err)
	}
	return true, nil
}

// removeDeadUnpacks removes the partial files of unpacks whose process is
// gone (SIGKILL or a SIGTERM with the default action during an unpack): up
// to two ~40 MB files each, which the hourly sweep would keep for an hour.
// A name without a pid (an older ferry) is left to that sweep.
func removeDeadUnpacks(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), ".unpack-")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// sameAs reports whether the file at p holds exactly blob. The comparison
// runs on up to four cores: it sits on every prepare's path, and reading
// 60 MB is memory-bound work that splits well.
func sameAs(p, embedded string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(embedded)) {
		return false
	}
	workers := min(runtime.NumCPU(), 4)
	part := (len(embedded) + workers - 1) / workers
	var differ atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		from, to := w*part, min((w+1)*part, len(embedded))
		if from >= to {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for off := from; off < to && !differ.Load(); {
				n, err := f.ReadAt(buf[:min(len(buf), to-off)], int64(off))
				if n == 0 || string(buf[:n]) != embedded[off:off+n] || (err != nil && err != io.EOF) {
					differ.Store(true)
					return
				}
				off += n
			}
		}()
	}
	wg.Wait()
	return !differ.Load()
}

// inUse returns the sums of the engines that a job's bin/ links to (its
// kubectl, the small one or the engine): a job keeps the binaries it was
// prepared with until it ends, even when ferry is upgraded while it runs.
// Jobs end by cleanup or by the stale sweep, which never takes the dir of
// a job younger than its timeout.
func inUse(stateRoot string) map[string]bool {
	used := map[string]bool{}
	jobs, err := os.ReadDir(filepath.Join(stateRoot, jobstate.JobsDirName))
	if err != nil {
		return used
	}
	for _, j := range jobs {
		bin := filepath.Join(stateRoot, jobstate.JobsDirName, j.Name(), jobstate.BinDirName)
		links, err := os.ReadDir(bin)
		if err != nil {
			continue
		}
		for _, l := range links {
			if l.Type()&os.ModeSymlink == 0 {
				continue
			}
			// Names are unique (their sum): the name is enough, however
			// the state root was spelled when the link was made.
			if t, err := os.Readlink(filepath.Join(bin, l.Name())); err == nil {
				if sum, ok := sumOf(filepath.Base(t)); ok {
					used[sum] = true
				}
			}
		}
	}
	return used
}

// sumOf is the sum in an unpacked binary's name (ferry-engine-SUM,
// ferry-kubectl-SUM).
func sumOf(name string) (string, bool) {
	for _, prefix := range []string{SiblingName + "-", KubectlName + "-"} {
		if strings.HasPrefix(name, prefix) {
			return strings.TrimPrefix(name, prefix), true
		}
	}
	return "", false
}

// sweep removes the binaries of sums other than keep whose engine has not
// been used for KeepUnused (each call that needs the engine touches it) and
// that no job links to, and unpack leftovers older than an hour. Best
// effort: a failure costs disk space, not the job.
func sweep(dir, keep string, used map[string]bool, now time.Time) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if strings.HasPrefix(n, ".unpack-") {
			if now.Sub(fi.ModTime()) > time.Hour {
				os.Remove(filepath.Join(dir, n))
			}
			continue
		}
		sum, ok := sumOf(n)
		if !ok || sum == keep || used[sum] {
			continue
		}
		// A kubectl's age is its engine's, while there is one.
		if efi, err := os.Stat(filepath.Join(dir, SiblingName+"-"+sum)); err == nil {
			fi = efi
		}
		if now.Sub(fi.ModTime()) > KeepUnused {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// KubectlName is the small kubectl's file name (executor/kubectl) when it is
// installed beside the engine rather than unpacked; unpacked, both carry
// the same sum: ferry-engine-SUM and ferry-kubectl-SUM.
const KubectlName = "ferry-kubectl"

// Partner returns the path of the binary that belongs with the one at p:
// the engine for the small kubectl and the other way round, in the same
// directory, with the same suffix (ferry-engine-SUM <-> ferry-kubectl-SUM,
// ferry-engine <-> ferry-kubectl). ok is false when p's name is neither.
func Partner(p string) (string, bool) {
	dir, name := filepath.Split(p)
	switch {
	case name == SiblingName || strings.HasPrefix(name, SiblingName+"-"):
		return filepath.Join(dir, KubectlName+strings.TrimPrefix(name, SiblingName)), true
	case name == KubectlName || strings.HasPrefix(name, KubectlName+"-"):
		return filepath.Join(dir, SiblingName+strings.TrimPrefix(name, KubectlName)), true
	}
	return "", false
}

// KubectlFor returns the small kubectl that belongs with the engine at
// engine, or engine itself when there is none (an engine installed alone,
// FERRY_ENGINE): the binary a job's bin/kubectl links to.
func KubectlFor(engine string) string {
	if p, ok := Partner(engine); ok && checkExecutable(p) == nil {
		return p
	}
	return engine
}

// JobKubectl is what a job's bin/kubectl links to for the engine at engine:
// KubectlFor(engine), except for an installed engine whose directory has
// the package's stable link ferry-kubectl -> ferry-kubectl-SUM to it. A
// package upgrade removes the files of the old SUM while jobs run; through
// the stable link their kubectl runs the new version instead of failing.
func JobKubectl(engine string) string {
	k := KubectlFor(engine)
	if k == engine {
		return k
	}
	stable := filepath.Join(filepath.Dir(k), KubectlName)
	if t, err := os.Readlink(stable); err == nil && filepath.Base(t) == filepath.Base(k) {
		if fi, err := os.Lstat(stable); err == nil && fi.Sys().(*syscall.Stat_t).Uid == 0 {
			return stable
		}
	}
	return k
}

// ExecPartner replaces the running small kubectl with its engine (Partner of
// the running executable) running argv. It returns only on failure.
func ExecPartner(argv []string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("locating this kubectl: %w", err)
	}
	p, ok := Partner(self)
	if !ok {
		return fmt.Errorf("this command runs in ferry's engine, and %s is not named %s-SUM, beside which the engine would be", self, KubectlName)
	}
	if err := checkExecutable(p); err != nil {
		return fmt.Errorf("this command runs in ferry's engine, which is missing: %w", err)
	}
	return Exec(p, argv)
}
