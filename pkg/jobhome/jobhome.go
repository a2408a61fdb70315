// Package jobhome keeps the job's HOME: a directory of its own project on
// this runner host, <state-root>/homes/<instance-hash>-<project-id>/, kept
// between that project's jobs (so the second job finds the first one's tool
// caches and config) and never seen by another project's job. It creates
// and checks the directory chain, seeds a home from the runner user's home
// (Sync: the admin's ~/.gitconfig, ~/.ssh/config, ...), records when each
// home was last used (a small record beside the home, outside what the job
// can write), sweeps the homes of projects idle for too long, and reports
// how many homes there are and their size (ferry check).
//
// The home is written by the job: every file in it is hostile input.
// Nothing here follows a symlink inside a home (openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), and removal never follows one.
package jobhome

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// DirName is the directory of the homes under the state root.
const DirName = "homes"

// sweepStamp (in homes/) is touched by each sweep.
const sweepStamp = ".swept"

// Modes an admin chooses per runner (--home).
const (
	ModeProject = "project" // one home per project, kept (default)
	ModeJob     = "job"     // a fresh home per job, removed at cleanup
	ModeRunner  = "runner"  // the runner user's own home (the shell executor's behaviour)
)

// XDG are the XDG base directories relative to the home, as the job gets
// them (XDG_CONFIG_HOME=<home>/.config, ...).
var XDG = []struct{ Var, Rel string }{
	{"XDG_CONFIG_HOME", ".config"},
	{"XDG_CACHE_HOME", ".cache"},
	{"XDG_DATA_HOME", ".local/share"},
	{"XDG_STATE_HOME", ".local/state"},
}

// Key names a project's home: the instance (first 8 hex of sha256 of the
// server URL) and the payload's project id, like job keys.
func Key(serverURL string, projectID int64) string {
	return jobstate.Key(serverURL, strconv.FormatInt(projectID, 10))
}

// Dir is the project's home under the state root (absolute root).
func Dir(stateRoot, serverURL string, projectID int64) string {
	return filepath.Join(stateRoot, DirName, Key(serverURL, projectID))
}

// recordPath is the record of the home dir: beside it, in homes/, which
// the job cannot write.
func recordPath(home string) string { return home + ".json" }

// Record is what ferry keeps of a project's home, outside it.
type Record struct {
	LastUsed       time.Time `json:"last_used"`
	TimeoutSeconds int64     `json:"timeout_seconds,omitempty"`
	// Files are the seeded files (relative to the home): the hash of the
	// runner user's file when it was last seen, and of the copy ferry
	// wrote ("" when the file was the project's own before seeding).
	Files map[string]FileRecord `json:"files,omitempty"`
}

// FileRecord is one seeded file.
type FileRecord struct {
	Source string `json:"source"`
	Copy   string `json:"copy,omitempty"`
}

// Ensure creates (or checks) <stateRoot>/homes/<key> and the chain to it:
// the state root and homes/ must be real directories of ferry's user
// (jobstate.EnsureDir); the home itself too, and it is put back to 0700 if
// the job changed its mode (the job owns what is in it, not its place).
// It then creates the XDG directories and ~/.ssh (0700) when missing.
func Ensure(stateRoot, home string) error {
	if err := jobstate.EnsureDir(stateRoot, false); err != nil {
		return err
	}
	if filepath.Dir(home) == filepath.Join(stateRoot, DirName) {
		if err := jobstate.EnsureDir(filepath.Join(stateRoot, DirName), true); err != nil {
			return err
		}
	}
	return ensureLeaf(home)
}

// EnsureLeaf creates the home dir itself (its parent must exist and be
// ferry's) and its XDG and .ssh directories.
func ensureLeaf(home string) error {
	if err := os.Mkdir(home, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("ferry: home %s: %w", home, err)
	}
	fi, err := os.Lstat(home)
	if err != nil {
		return fmt.Errorf("ferry: home %s: %w", home, err)
	}
	if !fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("ferry: home %s is not a real directory: refused", home)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("ferry: home %s is owned by uid %d, not by ferry's uid %d", home, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(home, 0o700); err != nil {
			return fmt.Errorf("ferry: home %s: %w", home, err)
		}
	}
	root, err := openDir(home)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	for _, d := range []string{".config", ".cache", ".local/share", ".local/state", ".ssh"} {
		fd, err := mkdirBeneath(root, d)
		if err != nil {
			// The project made it something else: its choice.
			continue
		}
		unix.Close(fd)
	}
	return nil
}

// ReadRecord reads the home's record (zero Record when there is none).
func ReadRecord(home string) (Record, error) {
	var r Record
	b, err := os.ReadFile(recordPath(home))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("ferry: home record: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		// ferry's own file: a broken one starts over (copies are then
		// treated as the project's own, never overwritten).
		return Record{}, nil
	}
	return r, nil
}

// WriteRecord writes the home's record atomically (temp file, rename).
// Not fsynced: every prepare writes it, an fsync costs ~10 ms on a busy
// disk, and a record lost in a crash is the safe side (the copies count
// as the project's own, never overwritten; the home looks idle from its
// mtime).
func WriteRecord(home string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	p := recordPath(home)
	f, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("ferry: home record: %w", err)
	}
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), p)
	}
	if werr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("ferry: home record: %w", werr)
	}
	return nil
}

// Lock takes the project's home lock (flock on <home>.lock beside it):
// concurrent jobs of one project seed one at a time, and the sweep never
// removes a home a prepare is working on. The returned func releases it.
func Lock(home string, wait bool) (func(), error) {
	f, err := os.OpenFile(home+".lock", os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ferry: home lock: %w", err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Touch records that a job of the project uses the home now and may for
// timeout: the sweep leaves it alone until max(olderThan, timeout+1h)
// after that.
func Touch(home string, timeout time.Duration) error {
	r, err := ReadRecord(home)
	if err != nil {
		return err
	}
	r.LastUsed = time.Now().UTC()
	r.TimeoutSeconds = int64(timeout / time.Second)
	return WriteRecord(home, r)
}

// SweepStale removes the homes under stateRoot whose project has not run a
// job for olderThan (and its last job's timeout + 1h), with their records,
// except keep. A home being seeded (locked) is skipped.
func SweepStale(stateRoot string, olderThan time.Duration, keep string) ([]string, error) {
	dir := filepath.Join(stateRoot, DirName)
	if err := jobstate.CheckChain(stateRoot, DirName); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	// A busy runner prepares many jobs an hour: one sweep an hour (or
	// per half of olderThan) is enough, and each reads every record.
	stamp := filepath.Join(dir, sweepStamp)
	every := olderThan / 2
	if every > time.Hour {
		every = time.Hour
	}
	now := time.Now()
	if fi, err := os.Lstat(stamp); err == nil && now.Sub(fi.ModTime()) < every {
		return nil, nil
	}
	if err := os.WriteFile(stamp, nil, 0o600); err == nil {
		_ = os.Chtimes(stamp, now, now)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("ferry: sweep homes: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		home := filepath.Join(dir, e.Name())
		if !e.IsDir() || home == keep {
			continue
		}
		if !stale(home, olderThan, now) {
			continue
		}
		unlock, err := Lock(home, false)
		if err != nil {
			continue // a job of that project is starting: not stale
		}
		if stale(home, olderThan, now) {
			if err := RemoveAll(home); err != nil {
				errs = append(errs, fmt.Errorf("ferry: sweep home %s: %w", home, err))
			} else {
				os.Remove(recordPath(home))
				os.Remove(home + ".lock")
				removed = append(removed, home)
			}
		}
		unlock()
	}
	return removed, errors.Join(errs...)
}

func stale(home string, olderThan time.Duration, now time.Time) bool {
	r, _ := ReadRecord(home)
	last := r.LastUsed
	if last.IsZero() {
		fi, err := os.Lstat(home)
		if err != nil {
			return false
		}
		last = fi.ModTime()
	}
	limit := olderThan
	if t := time.Duration(r.TimeoutSeconds)*time.Second + time.Hour; t > limit {
		limit = t
	}
	return now.Sub(last) > limit
}

// Usage counts the homes under stateRoot and their size on disk (bytes of
// allocated blocks, as du counts them; hard links once).
func Usage(stateRoot string) (homes int, bytes int64, err error) {
	dir := filepath.Join(stateRoot, DirName)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	seen := map[[2]uint64]bool{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		homes++
		_ = filepath.WalkDir(filepath.Join(dir, e.Name()), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				k := [2]uint64{uint64(st.Dev), st.Ino}
				if seen[k] {
					return nil
				}
				seen[k] = true
				bytes += st.Blocks * 512
			}
			return nil
		})
	}
	return homes, bytes, nil
}

// RemoveAll removes a home a job wrote (jobstate.RemoveTree: read-only
// directories too, symlinks never followed).
func RemoveAll(dir string) error { return jobstate.RemoveTree(dir) }
