package dotenvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// Dir stores reports as files on the runner host:
//
//	<root>/<server-hash>/<job-id>.json     mode 0600, dirs 0700
//
// Writes go to a temp file in the same directory, are fsynced and renamed
// over the final name, then the directory is fsynced: a reader (another
// job, another process) sees the whole old report or the whole new one,
// never a part, even when the writer is killed. Temp files a killed writer
// leaves behind start with '.' and are removed by Sweep after an hour.
type Dir struct {
	root string
}

// NewDir returns a store rooted at root (created on first Put).
func NewDir(root string) (*Dir, error) {
	if root == "" {
		return nil, errors.New("dotenvstore: empty --dotenv-dir")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("dotenvstore: --dotenv-dir %s: %w", root, err)
	}
	return &Dir{root: abs}, nil
}

// Root is the store's directory.
func (d *Dir) Root() string { return d.root }

func (d *Dir) path(k Key) string {
	return filepath.Join(d.root, k.ServerHash(), strconv.FormatInt(k.JobID, 10)+".json")
}

// Put implements Store.
func (d *Dir) Put(ctx context.Context, k Key, r *Report) error {
	if err := k.Check(); err != nil {
		return err
	}
	r.Fill(k)
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("dotenvstore: encode report of %s: %w", k, err)
	}
	p := d.path(k)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("dotenvstore: %w", err)
	}
	// Reports hold values the producer marked secret: never write them
	// through a symlink (or into a directory others can reach) that a job
	// planted where the store should be.
	if err := jobstate.CheckChain(d.root, filepath.Base(filepath.Dir(p))); err != nil {
		return fmt.Errorf("dotenvstore: %w", err)
	}
	// jobstate's writer: temp file (".<name>.tmp*", which Sweep
	// recognises), fsync, rename, fsync of the directory, mode 0600.
	if err := jobstate.WriteFileAtomic(p, b); err != nil {
		return fmt.Errorf("dotenvstore: %w", err)
	}
	return nil
}

// Get implements Store.
func (d *Dir) Get(ctx context.Context, k Key) (*Report, error) {
	if err := k.Check(); err != nil {
		return nil, err
	}
	p := d.path(k)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("dotenvstore: %s: %w", k, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dotenvstore: read %s: %w", p, err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("dotenvstore: read %s: %w: %w", p, ErrInvalid, err)
	}
	if r.JobID != k.JobID {
		return nil, fmt.Errorf("dotenvstore: %s holds job %d, not %d: %w", p, r.JobID, k.JobID, ErrInvalid)
	}
	if r.Expired(time.Now()) {
		return nil, fmt.Errorf("dotenvstore: %s: expired %s: %w", k, r.Expires.Format(time.RFC3339), ErrNotFound)
	}
	return &r, nil
}

// tempMaxAge is how old a writer's temp file must be before Sweep takes it
// for the leftover of a killed writer.
const tempMaxAge = time.Hour

// Sweep implements Store: it removes expired reports and leftover temp files.
// A report it cannot read is left alone and reported.
func (d *Dir) Sweep(ctx context.Context, now time.Time) (int, error) {
	servers, err := os.ReadDir(d.root)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dotenvstore: sweep %s: %w", d.root, err)
	}
	removed := 0
	var errs []error
	for _, s := range servers {
		if !s.IsDir() {
			continue
		}
		dir := filepath.Join(d.root, s.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return removed, err
			}
			p := filepath.Join(dir, e.Name())
			if strings.HasPrefix(e.Name(), ".") {
				if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > tempMaxAge {
					if os.Remove(p) == nil {
						removed++
					}
				}
				continue
			}
			if !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) { // a concurrent sweep took it
					errs = append(errs, err)
				}
				continue
			}
			var r struct {
				Expires time.Time `json:"expires"`
			}
			if err := json.Unmarshal(b, &r); err != nil {
				errs = append(errs, fmt.Errorf("dotenvstore: sweep %s: %w", p, err))
				continue
			}
			if !r.Expires.IsZero() && !now.Before(r.Expires) {
				if err := os.Remove(p); err == nil {
					removed++
				} else if !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	return removed, errors.Join(errs...)
}

// SweepDue reports whether a rate-limited sweep should run now, and if so
// records that it does (so of many jobs starting together, about one
// sweeps). The stamp is <root>/.last-sweep.
func (d *Dir) SweepDue(now time.Time, every time.Duration) bool {
	stamp := filepath.Join(d.root, ".last-sweep")
	if info, err := os.Stat(stamp); err == nil && now.Sub(info.ModTime()) < every {
		return false
	}
	if err := os.MkdirAll(d.root, 0o700); err != nil {
		return false
	}
	f, err := os.OpenFile(stamp, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return false
	}
	f.Close()
	return os.Chtimes(stamp, now, now) == nil
}
