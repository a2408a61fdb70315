// Package sandbox confines a job's processes with Landlock, the unprivileged
// Linux security module: a Policy says which file hierarchies the job may
// write, which it may read ("the whole system except" a list of hidden
// paths), and the sandboxed processes may neither signal, ptrace nor read
// /proc/<pid>/environ|mem of any process outside their own sandbox, nor
// connect to abstract unix sockets outside it (Landlock scopes, ABI 6+).
//
// Landlock is an allow-list. "Read everything except X" is built by
// granting read on every sibling along the path to X: for each directory
// that is an ancestor of a hidden path, its entries are listed and each one
// that is neither hidden nor itself an ancestor of a hidden path is granted
// as a whole hierarchy. Entries created after the ruleset is built (a job
// that starts later) are not covered, so they stay unreadable, which is the
// safe side. The ancestors themselves are not listable from inside.
//
// The ruleset restricts one OS thread only (OnThread): ferry locks a thread,
// restricts it, forks the job's shell from it (the child inherits the
// thread's Landlock domain and no_new_privs) and lets the Go runtime discard
// the thread afterwards. ferry itself is never restricted, and no extra
// process is started: the cost is building the ruleset (a few hundred
// open(O_PATH) + landlock_add_rule calls).
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// MinABI is the oldest Landlock ABI ferry sandboxes with: ABI 1 refuses
// every rename or link across directories, which git does all the time.
const MinABI = 2

// Probe reports the Landlock ABI version of the running kernel (with the
// kernel's errata applied: an ABI 6+ kernel without the signal-scoping fix
// counts as 5). err says why the sandbox is unavailable: Landlock missing,
// disabled at boot, or older than MinABI; abi is still reported then.
func Probe() (abi int, err error) {
	v, err := ll.LandlockGetABIVersion()
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOSYS):
			return 0, fmt.Errorf("the kernel has no Landlock (Linux 5.13+ with CONFIG_SECURITY_LANDLOCK)")
		case errors.Is(err, unix.EOPNOTSUPP):
			return 0, fmt.Errorf("Landlock is not enabled at boot (add landlock to the lsm= kernel parameter)")
		}
		return 0, fmt.Errorf("Landlock: %w", err)
	}
	if v >= 6 {
		// Same rule as go-landlock: signal scoping before the erratum fix
		// (errata bit 2) does not hold; use the ABI 5 feature set.
		if e, err := ll.LandlockGetErrata(); err != nil || e&0x2 == 0 {
			v = 5
		}
	}
	if v < MinABI {
		return v, fmt.Errorf("Landlock ABI %d is too old (ferry needs %d+, Linux 5.19+: renames across directories)", v, MinABI)
	}
	return v, nil
}

// Access rights by the ABI that introduced them.
const (
	fsABI1 = ll.AccessFSExecute | ll.AccessFSWriteFile | ll.AccessFSReadFile | ll.AccessFSReadDir |
		ll.AccessFSRemoveDir | ll.AccessFSRemoveFile | ll.AccessFSMakeChar | ll.AccessFSMakeDir |
		ll.AccessFSMakeReg | ll.AccessFSMakeSock | ll.AccessFSMakeFifo | ll.AccessFSMakeBlock | ll.AccessFSMakeSym

	readRights = ll.AccessFSExecute | ll.AccessFSReadFile | ll.AccessFSReadDir | ll.AccessFSResolveUnix
	// fileRights are the only rights a rule on a non-directory may hold.
	fileRights = ll.AccessFSExecute | ll.AccessFSWriteFile | ll.AccessFSReadFile | ll.AccessFSTruncate | ll.AccessFSIoctlDev | ll.AccessFSResolveUnix
)

// handledFS is every filesystem right the kernel's ABI can restrict.
func handledFS(abi int) uint64 {
	h := uint64(fsABI1)
	if abi >= 2 {
		h |= ll.AccessFSRefer
	}
	if abi >= 3 {
		h |= ll.AccessFSTruncate
	}
	if abi >= 5 {
		h |= ll.AccessFSIoctlDev
	}
	if abi >= 9 {
		h |= ll.AccessFSResolveUnix
	}
	return h
}

// Policy is what a job may reach. Paths are absolute; symlinks in them are
// resolved (a hidden path that is a symlink hides its target); paths that
// do not exist are left out.
type Policy struct {
	// ReadWrite are hierarchies (or single files) the job may read and
	// write, renames and links within and between them included.
	ReadWrite []string
	// ReadOnly are hierarchies readable even inside a hidden one (the job's
	// own state dir inside the hidden state root, say).
	ReadOnly []string
	// Hide are hierarchies the job may not read (and so not write) unless
	// ReadOnly or ReadWrite name a path inside them. Everything else is
	// readable and executable. A path the file permissions already keep
	// the job's user out of (it may neither read, write nor search it, and
	// does not own it; ferry is neither root nor capable) gets no rule:
	// hiding costs a rule per sibling on every level above it. An admin
	// who later opens its permissions to the runner user opens it to the
	// jobs too.
	Hide []string
	// Devices are hierarchies of device files the job may read, write and
	// ioctl (/dev: terminals, /dev/null, /dev/shm).
	Devices []string
}

// Ruleset is a built Landlock ruleset, ready to restrict threads.
type Ruleset struct {
	fd    int
	abi   int
	rules int
	// skipped counts hidden paths left to the file permissions.
	skipped int
	// kinds are the file types of the path prefixes the build looked up
	// (builder.kinds), for Real.
	kinds map[string]uint32
	// ids are their lstats when a Stamp check looked them up (Inode).
	ids map[string]idStat
}

// ABI is the Landlock ABI the ruleset was built for.
func (r *Ruleset) ABI() int { return r.abi }

// Rules is how many path rules the ruleset holds.
func (r *Ruleset) Rules() int { return r.rules }

// Skipped is how many hidden paths needed no rule: the file permissions
// already keep the job's user out of them (see Policy.Hide).
func (r *Ruleset) Skipped() int { return r.skipped }

// withoutPrivilege reports whether this process (and so the job, which
// inherits its credentials) is bound by file permissions: not root and no
// effective capability (CAP_DAC_OVERRIDE, CAP_FOWNER, ... would pass them).
func withoutPrivilege() bool {
	if os.Geteuid() == 0 {
		return false
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective == 0 && data[1].Effective == 0
}

// unreachable reports whether the file permissions alone keep this
// process's user out of path for good: it can neither read, write nor
// search (execute) it, and does not own it (the owner could chmod it back,
// which Landlock does not restrict). Without search permission on a
// directory nothing below it can be reached by path; a nested user
// namespace of the job maps only the job's own uid and gid, so it gives no
// capability over another owner's files. What cannot be told is kept
// hidden.
func unreachable(path string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || int(st.Uid) == os.Geteuid() {
		return false
	}
	for _, mode := range []uint32{unix.R_OK, unix.W_OK, unix.X_OK} {
		if err := unix.Faccessat(unix.AT_FDCWD, path, mode, unix.AT_EACCESS); !errors.Is(err, unix.EACCES) {
			return false
		}
	}
	return true
}

// Close releases the ruleset; threads it restricted stay restricted.
func (r *Ruleset) Close() error {
	if r == nil || r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// Build creates the Landlock ruleset of p for the running kernel.
func (p Policy) Build() (*Ruleset, error) {
	abi, err := Probe()
	if err != nil {
		return nil, err
	}
	return p.buildWith(abi, nil)
}

// buildWith builds p's ruleset, recording in stamp (nil: none) what it
// rests on.
func (p Policy) buildWith(abi int, stamp *Stamp) (*Ruleset, error) {
	handled := handledFS(abi)
	attr := ll.RulesetAttr{HandledAccessFS: handled}
	if abi >= 6 {
		attr.Scoped = ll.ScopeAbstractUnixSocket | ll.ScopeSignal
	}
	fd, err := ll.LandlockCreateRuleset(&attr, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: landlock_create_ruleset: %w", err)
	}
	r := &Ruleset{fd: fd, abi: abi}
	b := &builder{r: r, handled: handled, stamp: stamp}
	if err := b.add(p); err != nil {
		r.Close()
		return nil, err
	}
	r.kinds = b.kinds
	return r, nil
}

// Real resolves the absolute path p like filepath.EvalSymlinks (false: it
// does not exist), reusing the lstats of the build that made r: a caller
// that resolves the policy's paths again (the private /tmp's plan, every
// stage) pays no syscall for them. Not safe for concurrent use.
func (r *Ruleset) Real(p string) (string, bool) {
	if r == nil || !filepath.IsAbs(p) {
		return "", false
	}
	if r.kinds == nil {
		r.kinds = map[string]uint32{}
	}
	b := builder{kinds: r.kinds}
	return b.real(filepath.Clean(p))
}

// Inode is the device and inode of the resolved path p if the check that
// adopted r (Stamp.Current) looked it up (false: ask the file system).
func (r *Ruleset) Inode(p string) (dev, ino uint64, ok bool) {
	if r == nil {
		return 0, 0, false
	}
	id, ok := r.ids[p]
	return id.dev, id.ino, ok
}

type builder struct {
	r       *Ruleset
	handled uint64
	hidden  map[string]bool
	// hiddenList is sorted, for the ancestor test.
	hiddenList []string
	// kinds remembers what each path prefix is (realPaths).
	kinds map[string]uint32
	// ids, when not nil, remembers their lstats too (Stamp.Current).
	ids map[string]idStat
	// stamp records what the build rests on (nil: nothing).
	stamp *Stamp
}

// realPaths cleans, resolves symlinks and drops missing paths, like
// filepath.EvalSymlinks on each, but lstat-ing each prefix once per build:
// a policy's ~50 paths share most of their prefixes (the runner's home,
// the job's state dir), and their lstats were a quarter of the syscalls
// of a build. A path with a symlink on the way is left to EvalSymlinks.
func (b *builder) realPaths(in []string) []string {
	if b.kinds == nil {
		b.kinds = map[string]uint32{}
	}
	var out []string
	for _, p := range in {
		if p == "" || !filepath.IsAbs(p) {
			continue
		}
		if rp, ok := b.real(filepath.Clean(p)); ok {
			out = append(out, rp)
		}
	}
	return out
}

// missing marks a prefix that does not exist (or cannot be looked up).
const missing = ^uint32(0)

// real resolves the clean absolute path p.
func (b *builder) real(p string) (string, bool) {
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			continue
		}
		prefix := p[:i]
		kind, ok := b.kinds[prefix]
		if !ok {
			var st unix.Stat_t
			if err := unix.Lstat(prefix, &st); err != nil {
				kind = missing
			} else {
				kind = st.Mode & unix.S_IFMT
				if b.ids != nil {
					b.ids[prefix] = statID(&st)
				}
			}
			b.kinds[prefix] = kind
		}
		switch kind {
		case missing:
			return "", false
		case unix.S_IFLNK:
			rp, err := filepath.EvalSymlinks(p)
			return rp, err == nil
		}
	}
	return p, true
}

func (b *builder) add(p Policy) error {
	b.hidden = map[string]bool{}
	dacOnly := withoutPrivilege()
	for _, h := range b.realPaths(p.Hide) {
		if dacOnly && unreachable(h) {
			// The file permissions hide it already: no walk of its
			// siblings (a root-only /etc/gitlab-runner cost a rule per
			// entry of /etc).
			b.r.skipped++
			if b.stamp != nil {
				var st unix.Stat_t
				if err := unix.Lstat(h, &st); err == nil {
					b.stamp.record('h', h, &st)
				} else {
					b.stamp.record('h', h, &unix.Stat_t{}) // never the same again
				}
			}
			continue
		}
		if !b.hidden[h] {
			b.hidden[h] = true
			b.hiddenList = append(b.hiddenList, h)
		}
	}
	sort.Strings(b.hiddenList)
	read := readRights & b.handled
	if b.hidden["/"] {
		// Nothing is readable but what is named.
	} else if len(b.hiddenList) == 0 {
		if err := b.rule("/", read); err != nil {
			return err
		}
	} else if err := b.walk("/", read); err != nil {
		return err
	}
	for _, d := range b.realPaths(p.Devices) {
		if err := b.rule(d, b.handled); err != nil {
			return err
		}
	}
	for _, d := range b.realPaths(p.ReadOnly) {
		if err := b.rule(d, read); err != nil {
			return err
		}
	}
	write := b.handled &^ ll.AccessFSIoctlDev
	for _, d := range b.realPaths(p.ReadWrite) {
		if err := b.rule(d, write); err != nil {
			return err
		}
	}
	return nil
}

// ancestorOfHidden reports whether some hidden path lies strictly below dir.
func (b *builder) ancestorOfHidden(dir string) bool {
	prefix := dir + "/"
	if dir == "/" {
		prefix = "/"
	}
	i := sort.SearchStrings(b.hiddenList, prefix)
	return i < len(b.hiddenList) && strings.HasPrefix(b.hiddenList[i], prefix)
}

// walk grants read on every entry of dir except hidden ones, descending
// into entries that are ancestors of hidden paths. Symlinks need no rule:
// Landlock checks the path they resolve to.
func (b *builder) walk(dir string, read uint64) error {
	d, err := os.Open(dir)
	if err != nil {
		return nil // unreadable for ferry too: nothing to grant
	}
	defer d.Close()
	ents, err := d.ReadDir(-1)
	if err != nil {
		return nil
	}
	dfd := int(d.Fd())
	if b.stamp != nil {
		var st unix.Stat_t
		if err := unix.Fstat(dfd, &st); err != nil {
			return fmt.Errorf("sandbox: stat %s: %w", dir, err)
		}
		b.stamp.record('w', dir, &st)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if b.hidden[p] || e.Type()&os.ModeSymlink != 0 {
			continue
		}
		if e.IsDir() && b.ancestorOfHidden(p) {
			if err := b.walk(p, read); err != nil {
				return err
			}
			continue
		}
		// The entry's type from the directory listing decides its rights:
		// one openat and one landlock_add_rule per entry, no stat (a
		// system dir like /tmp can hold hundreds).
		access := read
		if !e.IsDir() {
			access &= fileRights
		}
		if err := b.ruleAt(dfd, e.Name(), p, access); err != nil {
			return err
		}
	}
	return nil
}

// ruleAt grants access on the entry name of the directory dfd (path is for
// errors only).
func (b *builder) ruleAt(dfd int, name, path string, access uint64) error {
	access &= b.handled
	if access == 0 {
		return nil
	}
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ELOOP) {
			return nil // gone meanwhile, or not ferry's to open
		}
		return fmt.Errorf("sandbox: open %s: %w", path, err)
	}
	defer unix.Close(fd)
	attr := ll.PathBeneathAttr{AllowedAccess: access, ParentFd: fd}
	if err := ll.LandlockAddPathBeneathRule(b.r.fd, &attr, 0); err != nil {
		if errors.Is(err, unix.EINVAL) && access&^fileRights != 0 {
			// The listing said directory, the inode says otherwise
			// (replaced meanwhile): retry with file rights only.
			return b.ruleAt(dfd, name, path, access&fileRights)
		}
		return fmt.Errorf("sandbox: landlock_add_rule %s: %w", path, err)
	}
	b.r.rules++
	return nil
}

// rule grants access on the hierarchy at path (opened without following a
// final symlink). A path that vanished meanwhile is skipped.
func (b *builder) rule(path string, access uint64) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ELOOP) {
			return nil
		}
		return fmt.Errorf("sandbox: open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("sandbox: stat %s: %w", path, err)
	}
	b.stamp.record('r', path, &st)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		access &= fileRights
	}
	access &= b.handled
	if access == 0 {
		return nil
	}
	attr := ll.PathBeneathAttr{AllowedAccess: access, ParentFd: fd}
	if err := ll.LandlockAddPathBeneathRule(b.r.fd, &attr, 0); err != nil {
		return fmt.Errorf("sandbox: landlock_add_rule %s: %w", path, err)
	}
	b.r.rules++
	return nil
}

// OnThread runs fn on an OS thread of its own, restricted by r first (r nil:
// unrestricted), and waits for fn to return. Processes fn starts inherit the
// restriction; the thread is thrown away afterwards (its goroutine exits
// locked), so no other goroutine ever runs restricted. Goroutines fn starts
// run on other, unrestricted threads.
//
// The thread also lives exactly as long as fn: a child started with
// SysProcAttr.Pdeathsig inside fn gets its signal only when ferry dies.
func OnThread(r *Ruleset, fn func() error) error {
	errc := make(chan error, 1)
	go onThread(r, fn, errc)
	return <-errc
}

// onThread is OnThread's goroutine. It never restricts the main thread: that
// is the thread group leader, and the kernel checks signals and ptrace aimed
// at ferry's pid (`kill $PPID` from the job, /proc/<ferry>/mem) against the
// leader's Landlock domain; a restricted leader would put ferry inside the
// job's sandbox. A new goroutine may well be scheduled there (the Go
// runtime runs goroutines on the main thread like on any other), so when it
// is, the goroutine keeps the main thread locked, which no other goroutine
// can then use, and hands the work to one that thus runs elsewhere.
func onThread(r *Ruleset, fn func() error, errc chan<- error) {
	runtime.LockOSThread()
	if r != nil && unix.Gettid() == unix.Getpid() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			onThread(r, fn, errc)
		}()
		<-done
		runtime.UnlockOSThread()
		return
	}
	if r == nil {
		defer runtime.UnlockOSThread()
	}
	if r != nil {
		if err := r.restrictThread(); err != nil {
			errc <- err
			return // the thread may be half restricted: it dies with us
		}
	}
	errc <- fn()
}

// restrictThread sets no_new_privs and enforces the ruleset on the calling
// thread only (no TSYNC): the caller has locked the thread and never
// unlocks it.
func (r *Ruleset) restrictThread() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	if err := ll.LandlockRestrictSelf(r.fd, 0); err != nil {
		return fmt.Errorf("sandbox: landlock_restrict_self: %w", err)
	}
	return nil
}

// FD is the ruleset's descriptor, for a process that inherits it and
// restricts itself with RestrictThread (pkg/tmpns's re-exec of ferry).
func (r *Ruleset) FD() int { return r.fd }

// RestrictThread sets no_new_privs and enforces the ruleset fd (built by
// another process and inherited) on the calling OS thread only: the caller
// has locked its thread and execs from it.
func RestrictThread(fd int) error { return (&Ruleset{fd: fd}).restrictThread() }
