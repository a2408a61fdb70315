package jobhome

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxSeedFile is the largest file a home is seeded with; bigger ones are
// skipped (a known_hosts of thousands of hosts is well below it).
const MaxSeedFile = 4 << 20

// SeedPlan is what a home starts from: Entries (paths relative to the
// runner user's home, files or directories) copied from From, minus what
// Skip says (secret files inside a seeded directory, say).
type SeedPlan struct {
	From    string
	Entries []string
	Skip    func(rel string) bool
	// Durable fsyncs each copy before it replaces the old one: a home
	// kept across jobs must not be left with a truncated .gitconfig by a
	// crash (its hash would then pass for the project's own edit). A
	// per-job home does not outlive a crash of its job anyway.
	Durable bool
}

// SyncResult says what Sync did, by path relative to the home.
type SyncResult struct {
	Copied  []string // new in this home
	Updated []string // the runner user's file changed, the project had not edited its copy
	Kept    []string // the runner user's file changed, the project had edited its copy (or made its own): left as is
	Removed []string // no longer seeded (gone from the runner user's home or from the list), copy unedited: removed
}

// CleanEntry checks one seed entry: a relative path inside the home,
// without "..", cleaned.
func CleanEntry(e string) (string, error) {
	c := path.Clean(strings.TrimPrefix(e, "~/"))
	if c == "." || path.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%q is not a path inside the home", e)
	}
	return c, nil
}

// expand lists the regular files the plan seeds, relative to the home.
func (p SeedPlan) expand() (map[string]string, error) {
	files := map[string]string{} // rel -> source path
	for _, e := range p.Entries {
		rel, err := CleanEntry(e)
		if err != nil {
			return nil, err
		}
		src := filepath.Join(p.From, rel)
		fi, err := os.Stat(src) // the admin's own home: a symlinked dotfile is followed
		if err != nil {
			continue
		}
		if fi.Mode().IsRegular() {
			if p.Skip == nil || !p.Skip(rel) {
				files[rel] = src
			}
			continue
		}
		if !fi.IsDir() {
			continue
		}
		_ = filepath.WalkDir(src, func(s string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			r, _ := filepath.Rel(p.From, s)
			r = filepath.ToSlash(r)
			if p.Skip != nil && p.Skip(r) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() {
				files[r] = s
			}
			return nil
		})
	}
	return files, nil
}

// Sync brings home (its record rec, updated in place) up to date with the
// plan. A file missing from the home is copied (new, or deleted by the
// project to take the admin's version again); a copy the project has not
// edited follows the runner user's file (changed: re-copied; gone or no
// longer listed: removed); a file the project edited, or had before ferry
// seeded it, is the project's and is left as it is.
func Sync(home string, rec *Record, p SeedPlan) (SyncResult, error) {
	var res SyncResult
	want, err := p.expand()
	if err != nil {
		return res, err
	}
	root, err := openDir(home)
	if err != nil {
		return res, err
	}
	defer unix.Close(root)
	if rec.Files == nil {
		rec.Files = map[string]FileRecord{}
	}
	var errs []error
	rels := make([]string, 0, len(want))
	for r := range want {
		rels = append(rels, r)
	}
	sort.Strings(rels)
	for _, rel := range rels {
		data, err := readSource(want[rel])
		if err != nil {
			continue // unreadable or too big: not seeded
		}
		sh := sum(data)
		cur, curErr := readBeneath(root, rel)
		fr, had := rec.Files[rel]
		switch {
		case !had && errors.Is(curErr, fs.ErrNotExist):
			if err := writeBeneath(root, rel, data, p.Durable); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", rel, err))
				continue
			}
			rec.Files[rel] = FileRecord{Source: sh, Copy: sh}
			res.Copied = append(res.Copied, rel)
		case errors.Is(curErr, fs.ErrNotExist):
			// Deleted by the project: the admin's version again (an
			// empty file is how a project opts out of one).
			if err := writeBeneath(root, rel, data, p.Durable); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", rel, err))
				continue
			}
			rec.Files[rel] = FileRecord{Source: sh, Copy: sh}
			res.Copied = append(res.Copied, rel)
		case !had:
			// The project's own file, there before ferry seeded it.
			rec.Files[rel] = FileRecord{Source: sh}
			res.Kept = append(res.Kept, rel)
		case fr.Source == sh:
			// Unchanged on the runner's side: nothing to do.
		case curErr == nil && fr.Copy != "" && sum(cur) == fr.Copy:
			if err := writeBeneath(root, rel, data, p.Durable); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", rel, err))
				continue
			}
			rec.Files[rel] = FileRecord{Source: sh, Copy: sh}
			res.Updated = append(res.Updated, rel)
		default:
			// Edited or removed by the project: its choice stands.
			fr.Source = sh
			rec.Files[rel] = fr
			res.Kept = append(res.Kept, rel)
		}
	}
	var gone []string
	for rel := range rec.Files {
		if _, ok := want[rel]; !ok {
			gone = append(gone, rel)
		}
	}
	sort.Strings(gone)
	for _, rel := range gone {
		fr := rec.Files[rel]
		delete(rec.Files, rel)
		cur, err := readBeneath(root, rel)
		if err != nil || fr.Copy == "" || sum(cur) != fr.Copy {
			continue // the project's now
		}
		if err := removeBeneath(root, rel); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", rel, err))
			continue
		}
		res.Removed = append(res.Removed, rel)
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("ferry: seeding home %s: %w", home, err)
	}
	return res, nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readSource(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f)
}

func readLimited(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", f.Name())
	}
	if fi.Size() > MaxSeedFile {
		return nil, fmt.Errorf("%s: bigger than %d bytes", f.Name(), MaxSeedFile)
	}
	return io.ReadAll(io.LimitReader(f, MaxSeedFile+1))
}

// Inside a home, every path is resolved beneath it and without symlinks:
// the job may have replaced any component with a link to elsewhere.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func openDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("ferry: home %s: %w", dir, err)
	}
	return fd, nil
}

func openBeneath(root int, rel string, flags uint64) (int, error) {
	return unix.Openat2(root, rel, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: beneath})
}

// readBeneath reads the regular file rel of the home (fs.ErrNotExist when
// there is none).
func readBeneath(root int, rel string) ([]byte, error) {
	fd, err := openBeneath(root, rel, unix.O_RDONLY)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fs.ErrNotExist
		}
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	return readLimited(f)
}

// mkdirBeneath creates the directories of rel (0700) and returns the last
// one opened.
func mkdirBeneath(root int, rel string) (int, error) {
	fd, err := unix.Dup(root)
	if err != nil {
		return -1, err
	}
	if rel == "." || rel == "" {
		return fd, nil
	}
	for _, c := range strings.Split(rel, "/") {
		if err := unix.Mkdirat(fd, c, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return -1, err
		}
		next, err := openBeneath(fd, c, unix.O_RDONLY|unix.O_DIRECTORY)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// writeBeneath replaces the file rel of the home with data (0600): a temp
// file beside it, fsync, rename. A directory in its way is left alone.
func writeBeneath(root int, rel string, data []byte, durable bool) error {
	dir, base := path.Split(rel)
	dfd, err := mkdirBeneath(root, strings.TrimSuffix(dir, "/"))
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := ".ferry-seed-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, werr := f.Write(data)
	if werr == nil && durable {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(dfd, tmp, dfd, base)
	}
	if werr != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
	}
	return werr
}

func removeBeneath(root int, rel string) error {
	dir, base := path.Split(rel)
	dfd := root
	if d := strings.TrimSuffix(dir, "/"); d != "" {
		fd, err := openBeneath(root, d, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		dfd = fd
	}
	return unix.Unlinkat(dfd, base, 0)
}
