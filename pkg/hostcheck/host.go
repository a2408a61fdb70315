package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"gitlab.com/ferry-ci/ferry/pkg/jobhome"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stNoexec is ST_NOEXEC of statfs(2)'s f_flags: nothing on that mount can
// be executed, the unpacked engine included.
const stNoexec = 0x8

// runTimeout bounds every program check starts (the engine, docker).
const runTimeout = 10 * time.Second

// engine checks that the engine this ferry uses unpacks and runs, and
// reports the same version. It unpacks into the state dir, as the first
// prepare would, only when check runs as the runner's user; as another
// user (root) it unpacks into a private temporary dir instead, so that it
// never leaves a file in the state dir that the runner's user cannot
// replace.
func (c *checker) engine(stateRoot string) {
	const subject = "engine"
	if c.h.Engine {
		c.r.OK(subject, "this is the engine")
		return
	}
	if c.h.LocateEngine == nil {
		c.r.Fail(subject, "this ferry cannot locate an engine")
		return
	}
	if p, ok := c.h.Getenv("FERRY_ENGINE"); ok && p != "" {
		c.r.OK(subject, "FERRY_ENGINE=%s in check's environment (the runner's environment decides for jobs)", p)
	} else if c.h.EmbeddedEngine > 0 {
		c.r.OK(subject, "ferry carries its engine (%.1f MB), unpacked once per version into <state-dir>/engine/", float64(c.h.EmbeddedEngine)/1e6)
	}
	root := stateRoot
	where := "the state dir " + root
	if root == "" || os.Geteuid() != c.uid {
		tmp, err := os.MkdirTemp("", "ferry-check-")
		if err != nil {
			c.r.Fail(subject, "cannot create a temporary dir to unpack the engine into: %v", err)
			return
		}
		defer os.RemoveAll(tmp)
		why := "check is not running as the runner's user"
		if root == "" {
			why = "no usable state dir yet"
		}
		root, where = tmp, "a temporary dir ("+why+")"
	}
	start := time.Now()
	p, err := c.h.LocateEngine(root)
	if err != nil {
		c.r.Fail(subject, "does not unpack into %s: %v", where, err)
		return
	}
	took := time.Since(start)
	envEngine, _ := c.h.Getenv("FERRY_ENGINE")
	installed := false
	if c.h.InstalledEngine != nil && envEngine == "" {
		ip, reason := c.h.InstalledEngine()
		installed = reason == "" && ip == p
		if reason != "" && ip != "" {
			c.r.Warn(subject, "not using the installed engine %s: %s; jobs unpack the embedded one into the state dir", ip, reason)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "version").CombinedOutput()
	got := strings.TrimSpace(string(out))
	if err != nil {
		c.r.Fail(subject, "%s does not run: %v: %s", p, err, firstLine(got))
		return
	}
	if want := "ferry " + c.h.Version; got != want {
		c.r.Fail(subject, "%s reports %q, this ferry is %q: FERRY_ENGINE names another version?", p, got, want)
		return
	}
	if installed {
		// A package's root-owned copy (pkg/enginebin.Installed).
		c.r.OK(subject, "installed, root-owned: nothing to unpack or compare; %s reports %s", p, got)
		return
	}
	c.r.OK(subject, "unpacks into %s in %s and runs: %s reports %s", where, took.Round(time.Millisecond), p, got)
}

// stateDir checks a state root: location, owner, mode, the dirs above it,
// the mount, and what is in it (engines, job dirs).
func (c *checker) stateDir(subject, dir string, buildsDirs []string) (usable bool) {
	if !filepath.IsAbs(dir) {
		c.r.Fail(subject, "not an absolute path: it would depend on the runner's working directory")
		return false
	}
	dir = filepath.Clean(dir)
	for _, b := range buildsDirs {
		if b == "" {
			continue
		}
		if within(dir, filepath.Clean(b)) {
			c.r.Fail(subject, "inside the builds dir %s: artifacts, caches and other jobs could reach job state", b)
			return false
		}
	}
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return c.missingStateDir(subject, dir)
	}
	if err != nil {
		c.r.Fail(subject, "%v", err)
		return false
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		c.r.Fail(subject, "is a symlink: ferry refuses it (whoever can change it redirects job secrets)")
		return false
	}
	if !fi.IsDir() {
		c.r.Fail(subject, "exists and is not a directory")
		return false
	}
	uid := owner(fi)
	perm := fi.Mode().Perm()
	ok := true
	if c.uid >= 0 && uid != c.uid {
		c.r.Fail(subject, "owned by %s, but jobs run as %s: prepare cannot create job state there (chown -R %s %s)", userName(uid), c.userName, c.userName, dir)
		ok = false
	}
	switch {
	case perm&0o022 != 0:
		c.r.Fail(subject, "mode %04o: group or others can write it and swap the engine or a job's files (chmod 0700 %s)", perm, dir)
		ok = false
	case perm&0o077 != 0:
		c.r.Warn(subject, "mode %04o: others can list job and engine names; ferry creates it 0700", perm)
	}
	if !c.parentsSafe(subject, dir) {
		ok = false
	}
	if noexec(dir) {
		c.r.Fail(subject, "on a noexec mount: the engine cannot run from <state-dir>/engine")
		ok = false
	}
	if ok {
		c.r.OK(subject, "owner %s, mode %04o, outside the builds dir", userName(uid), perm)
	}
	c.contents(subject, dir)
	return ok
}

// missingStateDir: the first prepare creates it; say whether it can.
func (c *checker) missingStateDir(subject, dir string) bool {
	parent := filepath.Dir(dir)
	for {
		if _, err := os.Lstat(parent); err == nil || parent == filepath.Dir(parent) {
			break
		}
		parent = filepath.Dir(parent)
	}
	pfi, err := os.Stat(parent)
	if err != nil {
		c.r.Fail(subject, "does not exist, and %s: %v", parent, err)
		return false
	}
	if c.uid >= 0 && owner(pfi) != c.uid && pfi.Mode().Perm()&0o002 == 0 {
		c.r.Fail(subject, "does not exist, and %s (owner %s) is not writable by %s: the first prepare cannot create it", parent, userName(owner(pfi)), c.userName)
		return false
	}
	c.r.OK(subject, "does not exist yet: the first prepare creates it (0700)")
	return c.parentsSafe(subject, dir)
}

// parentsSafe refuses a dir above the state dir that someone other than
// root and the runner's user could rename or replace.
func (c *checker) parentsSafe(subject, dir string) bool {
	ok := true
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err == nil {
			uid := owner(fi)
			perm := fi.Mode().Perm()
			sticky := fi.Mode()&fs.ModeSticky != 0
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				c.r.Warn(subject, "%s above it is a symlink to wherever it points now", p)
			case uid != 0 && uid != c.uid:
				c.r.Fail(subject, "%s above it is owned by %s, who could replace the state dir", p, userName(uid))
				ok = false
			case perm&0o022 != 0 && !sticky:
				c.r.Fail(subject, "%s above it is writable by group or others (mode %04o), who could replace the state dir", p, perm)
				ok = false
			case perm&0o002 != 0 && sticky:
				c.r.Warn(subject, "%s above it is a shared sticky dir (like /tmp): another user could take the name first", p)
			}
		}
		if p == filepath.Dir(p) {
			return ok
		}
	}
}

// contents reports the engines and job dirs in a state root: after an
// upgrade the old engine stays while jobs still use it.
func (c *checker) contents(subject, dir string) {
	engines, _ := filepath.Glob(filepath.Join(dir, "engine", "ferry-engine-*"))
	jobs, _ := os.ReadDir(filepath.Join(dir, "jobs"))
	var names []string
	for _, e := range engines {
		names = append(names, filepath.Base(e))
	}
	if len(names) == 0 {
		names = []string{"none yet"}
	}
	c.r.OK(subject, "%d job state dir(s); unpacked engines: %s", len(jobs), strings.Join(names, ", "))
}

func (c *checker) sandbox() {
	const subject = "sandbox"
	if c.h.Sandbox == nil {
		c.r.Warn(subject, "this ferry has no job sandbox: jobs of one runner user can read each other's files")
		return
	}
	abi, err := c.h.Sandbox()
	if err != nil {
		c.r.Warn(subject, "no Landlock sandbox for jobs on this host (kernel ABI %d): %v", abi, err)
		return
	}
	c.r.OK(subject, "Landlock ABI %d: the job sandbox is available on this kernel", abi)
	c.privateTmp()
}

// privateTmp reports whether jobs get a private /tmp here (prepare tries the
// same for every job and says in the job log which mode it runs in). It is a
// warning, not a problem: without it jobs still run, with /tmp refused.
// Run as root, check probes as the runner user: root may make namespaces
// the kernel (or AppArmor) refuses that user.
func (c *checker) privateTmp() {
	const subject = "private /tmp"
	if c.h.PrivateTmp == nil {
		return
	}
	uid, gid := -1, -1
	if os.Geteuid() == 0 && c.uid > 0 {
		uid, gid = c.uid, c.gid
	}
	if err := c.h.PrivateTmp(uid, gid); err != nil {
		c.r.Warn(subject, "not available, jobs run with /tmp and /var/tmp refused and use $TMPDIR: %s", firstLine(err.Error()))
		return
	}
	c.r.OK(subject, "available: each job gets its own /tmp and /var/tmp (user+mount namespace; --private-tmp=off turns it off)")
}

// docker reports what ferry's Docker features run: the docker CLI (and
// compose) on PATH. Missing ones are warnings: only Docker jobs need them.
func (c *checker) docker() {
	const subject = "docker"
	p, err := exec.LookPath("docker")
	if err != nil {
		c.r.Warn(subject, "no docker CLI on PATH (%s): jobs that run docker (seed 000's and 002's deploys) need it", os.Getenv("PATH"))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	// --version is the client's own: it never contacts a daemon.
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		c.r.Fail(subject, "%s --version: %v", p, err)
		return
	}
	c.r.OK(subject, "%s: %s", p, firstLine(string(out)))
	if out, err := exec.CommandContext(ctx, p, "compose", "version", "--short").Output(); err == nil {
		c.r.OK(subject, "docker compose %s", firstLine(string(out)))
	} else if cp, err := exec.LookPath("docker-compose"); err == nil {
		c.r.OK(subject, "docker-compose at %s (no compose plugin)", cp)
	} else {
		c.r.Warn(subject, "neither the docker compose plugin nor docker-compose: compose deploys need one")
	}
	// ferry holds Docker's SSH connections itself; OpenSSH, when present,
	// only tells it how the runner's user reaches a hand-made context's
	// host (~/.ssh/config: aliases, users, keys).
	if sp, err := exec.LookPath("ssh"); err == nil {
		c.r.OK(subject, "ssh client %s: ssh:// docker contexts are resolved with the runner user's ~/.ssh/config", sp)
	} else {
		c.r.OK(subject, "no ssh client: ssh:// docker contexts use OpenSSH's default key and known_hosts paths (no ~/.ssh/config)")
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func owner(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

func userName(uid int) string {
	if u, err := lookupAccount(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

func noexec(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Flags&stNoexec != 0
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// homes reports the job homes kept under a state dir (pkg/jobhome): how
// many projects have one and their size on disk.
func (c *checker) homes(subject, dir string) {
	n, size, err := jobhome.Usage(dir)
	if err != nil {
		c.r.Warn(subject, "job homes: %v", err)
		return
	}
	c.r.OK(subject, "%d project home(s) in %s, %.1f MB on disk (--job-home, --home-stale-after: docs/home.md)", n, filepath.Join(dir, jobhome.DirName), float64(size)/1e6)
}
