package sandbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A Stamp tells whether a ruleset built earlier is the one a build would
// make now, without building it: a job's stages each need the ruleset of
// the same policy, and building it (a rule per entry of every directory on
// the way to a hidden path, ~60 rules) was most of what the sandbox added
// to a stage. A Landlock rule holds an inode, not a path, so the stamp
// records, for everything the build decided on, what the decision rested
// on:
//   - the policy itself (a digest), the ABI and whether the build was bound
//     by file permissions;
//   - where each of the policy's paths resolved to (or that it was missing);
//   - the inode each path rule holds (a directory made again since is
//     another inode, which the old rule does not cover);
//   - each directory whose entries were granted one by one (the walk to a
//     hidden path): its inode and ctime, which any entry made, removed or
//     renamed in it changes;
//   - each hidden path left to the file permissions: its inode, owner,
//     mode and ctime (a chmod changes it);
//   - for each path that was missing, its deepest existing directory:
//     inode and ctime. While they are unchanged no entry was made in it,
//     so the path is still missing and need not be looked up (most of
//     the runner's secret files a policy hides do not exist).
//
// Current checks all of it again with lstats, a fraction of a build.
type Stamp struct {
	key     string
	ids     []stampID
	missing []missingPath
}

// missingPath is a policy path that did not exist, and its deepest
// existing directory.
type missingPath struct {
	path, dir string
	st        idStat
}

type stampID struct {
	kind byte // 'r' rule target: inode; 'w' walked dir, 'h' hidden left to permissions: inode and ctime
	path string
	st   idStat
}

type idStat struct {
	dev, ino  uint64
	mode, uid uint32
	ctime     int64
}

func statID(st *unix.Stat_t) idStat {
	return idStat{dev: st.Dev, ino: st.Ino, mode: st.Mode, uid: st.Uid, ctime: st.Ctim.Nano()}
}

// same compares what kind k's decision rested on.
func (a idStat) same(k byte, b idStat) bool {
	if a.dev != b.dev || a.ino != b.ino || a.mode&unix.S_IFMT != b.mode&unix.S_IFMT {
		return false
	}
	if k == 'r' {
		return true // a rule target is written by the job: its times move
	}
	return a.ctime == b.ctime && a.mode == b.mode && a.uid == b.uid
}

// stampKey digests what a build of p rests on besides the inodes: the
// ABI, whether the file permissions bind it, and each of p's paths with
// where it resolves (realPaths), in order. A digest, not the text: the
// stamp is read every stage, and unquoting a few kilobytes of paths cost
// more than hashing them.
func (b *builder) stampKey(p Policy, abi int, stillMissing map[string]bool) string {
	h := sha256.New()
	dac := " priv "
	if withoutPrivilege() {
		dac = " dac "
	}
	io.WriteString(h, strconv.Itoa(abi)+dac+strconv.Itoa(os.Geteuid()))
	for _, list := range [][]string{p.Hide, p.Devices, p.ReadOnly, p.ReadWrite} {
		h.Write([]byte{'\n'})
		for _, in := range list {
			out := "-"
			if in != "" && filepath.IsAbs(in) && !stillMissing[in] {
				if rp, ok := b.real(filepath.Clean(in)); ok {
					out = rp
				}
			}
			io.WriteString(h, in)
			h.Write([]byte{0})
			io.WriteString(h, out)
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// missingPaths lists p's paths that resolved to nothing with their
// deepest existing directory, from the lookups of b (a finished build).
// A path with a symlink on the way is left out: it is looked up again.
func (b *builder) missingPaths(p Policy) []missingPath {
	var out []missingPath
	for _, list := range [][]string{p.Hide, p.Devices, p.ReadOnly, p.ReadWrite} {
		for _, in := range list {
			if in == "" || !filepath.IsAbs(in) {
				continue
			}
			c := filepath.Clean(in)
			if _, ok := b.real(c); ok {
				continue
			}
			dir := ""
			for i := 1; i <= len(c); i++ {
				if i < len(c) && c[i] != '/' {
					continue
				}
				kind, ok := b.kinds[c[:i]]
				if !ok || kind == missing {
					break
				}
				if kind != unix.S_IFDIR {
					dir = ""
					break
				}
				dir = c[:i]
			}
			var st unix.Stat_t
			if dir == "" || unix.Lstat(dir, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			out = append(out, missingPath{path: in, dir: dir, st: statID(&st)})
		}
	}
	return out
}

// BuildStamped is Build, also returning the Stamp that tells later whether
// the ruleset is still the one a build would make (Current).
func (p Policy) BuildStamped() (*Ruleset, *Stamp, error) {
	abi, err := Probe()
	if err != nil {
		return nil, nil, err
	}
	s := &Stamp{}
	r, err := p.buildWith(abi, s)
	if err != nil {
		return nil, nil, err
	}
	b := builder{kinds: r.kinds}
	s.key = b.stampKey(p, abi, nil) // every prefix is known: no syscall
	s.missing = b.missingPaths(p)
	return r, s, nil
}

func (s *Stamp) record(kind byte, path string, st *unix.Stat_t) {
	if s != nil {
		s.ids = append(s.ids, stampID{kind: kind, path: path, st: statID(st)})
	}
}

// Lookups are the path lookups a Stamp check made, for Adopt: the stage's
// later resolutions of the same paths (Ruleset.Real, Ruleset.Inode) cost
// no syscall.
type Lookups struct {
	kinds map[string]uint32
	ids   map[string]idStat
}

// Current reports whether a ruleset built for p with stamp s is the one
// p.Build would make now. It also returns the ABI and the lookups it made,
// for Adopt.
func (s *Stamp) Current(p Policy) (ok bool, abi int, l Lookups) {
	abi, err := Probe()
	if err != nil {
		return false, 0, l
	}
	b := builder{kinds: map[string]uint32{}, ids: map[string]idStat{}}
	// A path missing at the build whose directory has not changed since
	// is missing still: no lookup of it (see Stamp).
	stillMissing := map[string]bool{}
	for _, m := range s.missing {
		if dir, ok := b.real(m.dir); ok && dir == m.dir {
			if cur, ok := b.ids[dir]; ok && m.st.same('m', cur) {
				stillMissing[m.path] = true
			}
		}
	}
	if b.stampKey(p, abi, stillMissing) != s.key {
		return false, 0, l
	}
	for _, id := range s.ids {
		// Every recorded path is one the resolution above looked up
		// (a rule's target, a walked dir, a hidden path): no syscall
		// again, unless a symlink on the way left it to EvalSymlinks.
		cur, seen := b.ids[id.path]
		if !seen {
			var st unix.Stat_t
			if err := unix.Lstat(id.path, &st); err != nil {
				return false, 0, l
			}
			cur = statID(&st)
		}
		if !id.st.same(id.kind, cur) {
			return false, 0, l
		}
	}
	return true, abi, Lookups{kinds: b.kinds, ids: b.ids}
}

// MarshalText encodes s: the key, then a line per inode, paths quoted.
func (s *Stamp) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(stampHeader)
	b.WriteString(s.key)
	b.WriteByte('\n')
	for _, id := range s.ids {
		writeStampLine(&b, id.kind, id.st, id.path)
	}
	for _, m := range s.missing {
		writeStampLine(&b, 'm', m.st, m.dir, m.path)
	}
	return b.Bytes(), nil
}

// writeStampLine writes one line of a stamp: its kind, st's five numbers,
// then paths, quoted (UnmarshalText reads it back).
func writeStampLine(b *bytes.Buffer, kind byte, st idStat, paths ...string) {
	b.WriteByte(kind)
	for _, n := range []uint64{st.dev, st.ino, uint64(st.mode), uint64(st.uid), uint64(st.ctime)} {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(n, 10))
	}
	for _, p := range paths {
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(p))
	}
	b.WriteByte('\n')
}

const stampHeader = "ferry-sandbox-stamp 3\n"

// UnmarshalText decodes what MarshalText wrote (every stage does: no fmt
// scanning, which cost more than the lstats the stamp saves).
func (s *Stamp) UnmarshalText(data []byte) error {
	bad := errors.New("sandbox: not a ruleset stamp")
	text, ok := strings.CutPrefix(string(data), stampHeader)
	if !ok {
		return bad
	}
	var rest string
	s.key, rest, _ = strings.Cut(text, "\n")
	if len(s.key) != sha256.Size*2 {
		return bad
	}
	var err error
	s.ids, s.missing = s.ids[:0], s.missing[:0]
	for rest != "" {
		line, next, _ := strings.Cut(rest, "\n")
		rest = next
		if len(line) < 2 || !strings.ContainsRune("rwhm", rune(line[0])) || line[1] != ' ' {
			return bad
		}
		f := line[2:]
		var n [5]uint64
		for i := range n {
			var num string
			num, f, _ = strings.Cut(f, " ")
			if n[i], err = strconv.ParseUint(num, 10, 64); err != nil {
				return bad
			}
		}
		st := idStat{dev: n[0], ino: n[1], mode: uint32(n[2]), uid: uint32(n[3]), ctime: int64(n[4])}
		if line[0] == 'm' {
			// Two quoted paths: the directory, then the missing path.
			q, err := strconv.QuotedPrefix(f)
			if err != nil || len(f) < len(q)+2 || f[len(q)] != ' ' {
				return bad
			}
			m := missingPath{st: st}
			if m.dir, err = strconv.Unquote(q); err != nil {
				return bad
			}
			if m.path, err = strconv.Unquote(f[len(q)+1:]); err != nil {
				return bad
			}
			s.missing = append(s.missing, m)
			continue
		}
		id := stampID{kind: line[0], st: st}
		if id.path, err = strconv.Unquote(f); err != nil {
			return bad
		}
		s.ids = append(s.ids, id)
	}
	return nil
}

// Adopt makes a Ruleset of fd, a Landlock ruleset built for p elsewhere
// (BuildStamped, kept by another process) whose Stamp is Current for p;
// abi and l are what Current returned. The descriptor is checked to be a
// Landlock ruleset; Adopt owns it from then on, even on error.
func Adopt(fd, abi int, l Lookups) (*Ruleset, error) {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || link != "anon_inode:[landlock-ruleset]" {
		unix.Close(fd)
		return nil, fmt.Errorf("sandbox: descriptor %d is not a Landlock ruleset (%q)", fd, link)
	}
	return &Ruleset{fd: fd, abi: abi, kinds: l.kinds, ids: l.ids}, nil
}
