// Package jobstate manages a job's private state directory,
// <state-root>/jobs/<job-key>/, which lives outside the build directory so
// that nothing in it can be swept into artifacts, caches or image builds.
// Every file is written atomically (temp file, fsync, rename) with mode 0600;
// directories are 0700.
package jobstate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/version"
)

// File names inside a job's state directory.
const (
	MetaFile    = "meta.json"
	EnvFile     = "env.json"
	SecretsFile = "secrets.json"
	CleanupFile = "cleanup.json"
	BinDirName  = "bin"
	// KubeDirName holds the job's kubeconfig, KubeconfigFile. It is a
	// directory of its own because the job may write it (the sandbox
	// allows it): `kubectl config use-context` rewrites the file and
	// client-go puts a .lock file beside it. The state dir itself stays
	// read-only to the job.
	KubeDirName    = "kube"
	KubeconfigFile = KubeDirName + "/kubeconfig"
	JobsDirName    = "jobs"
	dirMode        = 0o700
	fileMode       = 0o600
	staleMargin    = time.Hour // added to a job's own timeout before its dir counts as stale
	defaultSweep   = 24 * time.Hour
)

// PlainName reports whether s is usable as a plain file name: 1 to 64 of
// [A-Za-z0-9_-]. It keeps job keys, and the runner-given ids config turns
// into directory names, free of separators and dots.
// Not a regexp: compiling one at init costs every ferry process ~0.1 ms per regexp.
func PlainName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// State is one job's state directory.
type State struct {
	root, dir string
	jobID     string
	tokenHash string
	ident     jobenv.Identity
	// ProjectDir (CI_PROJECT_DIR) and Timeout (the payload's
	// runner_info.timeout) are recorded in meta.json by Create: the stale
	// sweep never removes a directory younger than Timeout+1h.
	ProjectDir string
	Timeout    time.Duration

	mu sync.Mutex // serialises read-modify-write of the JSON files
}

// Meta is the content of meta.json.
type Meta struct {
	Created        time.Time `json:"created"`
	JobID          string    `json:"job_id"`
	ProjectDir     string    `json:"project_dir,omitempty"`
	TimeoutSeconds int64     `json:"timeout_seconds,omitempty"`
	// Format and Ferry: the state layout (see Format) and the ferry
	// version that wrote it; absent in state of ferry before versions.
	Format int    `json:"format,omitempty"`
	Ferry  string `json:"ferry,omitempty"`
	// TokenSHA256 binds the dir to the job's token (TokenHash): a job
	// whose payload has another token is refused the dir.
	TokenSHA256 string `json:"token_sha256,omitempty"`
}

// EnvVar is one environment override for the job script.
type EnvVar struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Secret bool   `json:"secret,omitempty"`
}

// Key returns the job key: the first 8 hex digits of sha256(serverURL), a
// dash, the job id. Two GitLab instances served by one runner host cannot
// collide on job ids.
func Key(serverURL, jobID string) string {
	sum := sha256.Sum256([]byte(serverURL))
	return hex.EncodeToString(sum[:])[:8] + "-" + jobID
}

// Open computes the job's directory under root from the job's identity
// (the payload's id, the server URL; jobenv.Identity); it does not touch the
// disk. The token is recorded by Create and checked by Check, so a job can
// only ever use a state dir its own token created.
func Open(root string, id jobenv.Identity) (*State, error) {
	if root == "" {
		return nil, errors.New("ferry: state dir: empty path (--state-dir)")
	}
	if id.ID <= 0 || id.Token == "" {
		return nil, errors.New("ferry: job identity: the job payload has no id or token")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("ferry: state dir %s: %w", root, err)
	}
	return &State{
		root:      abs,
		dir:       filepath.Join(abs, JobsDirName, Key(id.ServerURL, id.IDString())),
		jobID:     id.IDString(),
		tokenHash: TokenHash(id.Token),
		ident:     id,
	}, nil
}

// Job is the identity the state was opened for.
func (s *State) Job() jobenv.Identity { return s.ident }

// TokenHash is what meta.json records of the job token: enough to tell the
// owner of a state dir, nothing that authenticates as the job.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte("ferry job state\x00" + token))
	return hex.EncodeToString(sum[:])
}

// Dir is the job's state directory.
func (s *State) Dir() string { return s.dir }

// Root is the state root (--state-dir).
func (s *State) Root() string { return s.root }

// Path is a file inside the state directory.
func (s *State) Path(name string) string { return filepath.Join(s.dir, name) }

// BinDir is the per-job bin directory, prepended to the job's PATH.
func (s *State) BinDir() string { return s.Path(BinDirName) }

// Exists reports whether Create has run (and Remove has not).
func (s *State) Exists() bool {
	_, err := os.Lstat(s.Path(MetaFile))
	return err == nil
}

// Create makes the directory (0700), bin/ and meta.json. Every directory
// from the state root down is checked first (CheckChain). An existing
// directory from an earlier attempt of the same job is reused, provided it
// is a real directory owned by this user and made for this job's token.
func (s *State) Create() error {
	if err := EnsureDir(s.root, false); err != nil {
		return err
	}
	if err := EnsureDir(filepath.Join(s.root, JobsDirName), true); err != nil {
		return err
	}
	if err := os.Mkdir(s.dir, dirMode); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("ferry: cannot create state dir %s: %w", s.dir, err)
		}
		if err := checkDir(s.dir, true); err != nil {
			return err
		}
		if err := s.checkToken(); err != nil {
			return err
		}
		if err := s.CheckFormat(); err != nil {
			return err
		}
		if err := s.dropUnversioned(); err != nil {
			return err
		}
	}
	// Mkdir's mode is filtered by the umask; make it exact.
	if err := os.Chmod(s.dir, dirMode); err != nil {
		return fmt.Errorf("ferry: state dir %s: %w", s.dir, err)
	}
	if err := os.Mkdir(s.BinDir(), dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("ferry: cannot create %s: %w", s.BinDir(), err)
	}
	m := Meta{Created: time.Now().UTC(), JobID: s.jobID, ProjectDir: s.ProjectDir, TimeoutSeconds: int64(s.Timeout / time.Second),
		Format: Format, Ferry: version.Version, TokenSHA256: s.tokenHash}
	return s.writeJSON(MetaFile, m)
}

// ErrOtherJob is returned (wrapped) by Check and Create for a state dir
// that another job (another token) made.
var ErrOtherJob = errors.New("belongs to another job")

// Check makes sure the job's state dir can be trusted before a stage uses
// it: every directory from the root down is a real directory of ferry's
// user, private (CheckChain), and meta.json names this job's token. A dir
// that does not exist gives an error wrapping fs.ErrNotExist.
func (s *State) Check() error {
	if err := CheckChain(s.root, JobsDirName, filepath.Base(s.dir)); err != nil {
		return err
	}
	return s.checkToken()
}

// checkToken compares meta.json's token hash with the job's. A dir without
// meta.json (a prepare that died before writing it) is the job's own: its
// name comes from the payload's job id.
func (s *State) checkToken() error {
	m, err := s.Meta()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if m.TokenSHA256 == "" {
		// Written by a ferry before token binding (a job in flight across
		// an upgrade): its name came from CI_JOB_ID then, which matched the
		// payload for every job that did not forge it.
		return nil
	}
	if m.TokenSHA256 != s.tokenHash {
		return fmt.Errorf("ferry: state dir %s %w (its job token differs from this job's): left alone", s.dir, ErrOtherJob)
	}
	return nil
}

// CheckChain checks root and each of root/sub[0], root/sub[0]/sub[1], ...:
// each must be a directory, not a symlink, owned by ferry's user; root must
// not be writable by group or others, the ones below it not accessible to
// them at all. A job that replaced <state>/jobs with a symlink into a build
// directory would otherwise have later jobs' kubeconfigs written there. The
// first missing directory ends the walk with an error wrapping
// fs.ErrNotExist.
func CheckChain(root string, sub ...string) error {
	if err := checkDir(root, false); err != nil {
		return err
	}
	p := root
	for _, name := range sub {
		p = filepath.Join(p, name)
		if err := checkDir(p, true); err != nil {
			return err
		}
	}
	return nil
}

// EnsureDir creates dir (0700, parents too) when missing, then checks it
// like CheckChain: a real directory, not a symlink, ferry's own, not
// writable by group or others (private: not reachable by them at all).
// Every directory ferry keeps state in goes through it (enginebin's too).
func EnsureDir(dir string, private bool) error {
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ferry: cannot create state dir %s: %w", dir, err)
		}
		// The root's parents are the admin's: create them as MkdirAll would.
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return fmt.Errorf("ferry: cannot create state dir %s: %w", dir, err)
		}
	}
	return checkDir(dir, private)
}

// checkDir refuses a symlink, a non-directory or a directory of another
// user where ferry keeps private state, and one others could write (or,
// private, reach at all).
func checkDir(dir string, private bool) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("ferry: state dir %s: %w", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("ferry: state dir %s is a symlink: refused (ferry's state must be a real directory; a job may have replaced it)", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("ferry: state dir %s exists and is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("ferry: state dir %s is owned by uid %d, not by ferry's uid %d", dir, st.Uid, os.Geteuid())
	}
	perm := fi.Mode().Perm()
	if private && perm&0o077 != 0 {
		return fmt.Errorf("ferry: state dir %s has mode %04o: want 0700 (no access for group or others)", dir, perm)
	}
	if !private && perm&0o022 != 0 {
		return fmt.Errorf("ferry: state dir %s has mode %04o: group or others could change what is in it (want 0700)", dir, perm)
	}
	return nil
}

// Meta reads meta.json.
func (s *State) Meta() (Meta, error) {
	var m Meta
	err := readJSON(s.Path(MetaFile), &m)
	return m, err
}

// AddEnv sets an environment override for the job script (replacing an
// earlier one of the same key). A secret value is also added to the secrets
// and never written into GITLAB_ENV.
func (s *State) AddEnv(key, value string, secret bool) error {
	if key == "" {
		return errors.New("ferry: AddEnv: empty key")
	}
	if secret {
		if err := s.AddSecrets(value); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	vars, err := s.env()
	if err != nil {
		return err
	}
	replaced := false
	for i := range vars {
		if vars[i].Key == key {
			vars[i] = EnvVar{Key: key, Value: value, Secret: secret || vars[i].Secret}
			replaced = true
		}
	}
	if !replaced {
		vars = append(vars, EnvVar{Key: key, Value: value, Secret: secret})
	}
	return s.writeJSON(EnvFile, vars)
}

// AddEnvs is AddEnv for many variables with one write of env.json (and one
// of secrets.json): a feature adding hundreds pays one fsync, not hundreds.
func (s *State) AddEnvs(vars []EnvVar) error {
	var secrets []string
	for _, v := range vars {
		if v.Key == "" {
			return errors.New("ferry: AddEnvs: empty key")
		}
		if v.Secret {
			secrets = append(secrets, v.Value)
		}
	}
	if err := s.AddSecrets(secrets...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.env()
	if err != nil {
		return err
	}
	idx := make(map[string]int, len(cur)+len(vars))
	for i, e := range cur {
		idx[e.Key] = i
	}
	for _, v := range vars {
		if i, ok := idx[v.Key]; ok {
			cur[i] = EnvVar{Key: v.Key, Value: v.Value, Secret: v.Secret || cur[i].Secret}
			continue
		}
		idx[v.Key] = len(cur)
		cur = append(cur, v)
	}
	return s.writeJSON(EnvFile, cur)
}

// Env returns the overrides in the order they were first added.
func (s *State) Env() ([]EnvVar, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.env()
}

func (s *State) env() ([]EnvVar, error) {
	var vars []EnvVar
	if err := readJSONOptional(s.Path(EnvFile), &vars); err != nil {
		return nil, err
	}
	return vars, nil
}

// AddSecrets adds values the redactor must mask (empty ones are ignored).
func (s *State) AddSecrets(values ...string) error {
	return s.addStrings(SecretsFile, values)
}

// Secrets returns the values to mask.
func (s *State) Secrets() ([]string, error) { return s.strings(SecretsFile) }

// AddCleanupPath records an extra path cleanup must remove.
func (s *State) AddCleanupPath(p string) error {
	if p == "" {
		return nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return fmt.Errorf("ferry: cleanup path %s: %w", p, err)
	}
	return s.addStrings(CleanupFile, []string{abs})
}

// CleanupPaths returns the extra paths to remove at cleanup.
func (s *State) CleanupPaths() ([]string, error) { return s.strings(CleanupFile) }

func (s *State) addStrings(name string, values []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur []string
	if err := readJSONOptional(s.Path(name), &cur); err != nil {
		return err
	}
	seen := make(map[string]bool, len(cur))
	for _, v := range cur {
		seen[v] = true
	}
	changed := false
	for _, v := range values {
		if v != "" && !seen[v] {
			seen[v] = true
			cur = append(cur, v)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return s.writeJSON(name, cur)
}

func (s *State) strings(name string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur []string
	err := readJSONOptional(s.Path(name), &cur)
	return cur, err
}

// Remove deletes the state directory. A missing directory is not an error.
// Nothing is removed when a directory above it is not ferry's own
// (CheckChain): RemoveAll through a symlinked <state>/jobs would delete
// inside whatever it points to.
func (s *State) Remove() error {
	if err := CheckChain(s.root, JobsDirName); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := RemoveTree(s.dir); err != nil {
		return fmt.Errorf("ferry: remove state dir %s: %w", s.dir, err)
	}
	return nil
}

// RemoveTree removes a directory tree a job wrote: like os.RemoveAll
// (symlinks are removed, never followed), but directories the job made
// read-only (Go's module cache makes them 0555) are made writable first.
// Modes are changed through O_PATH descriptors opened without following
// symlinks, so a job swapping a directory for a symlink meanwhile cannot
// make ferry chmod anything outside the tree.
func RemoveTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		makeWritable(fd, 0)
		unix.Close(fd)
	}
	return os.RemoveAll(dir)
}

// makeWritable gives the directory at the O_PATH descriptor fd, and every
// directory below it, mode 0700.
func makeWritable(fd, depth int) {
	if depth > 256 {
		return
	}
	if err := os.Chmod("/proc/self/fd/"+strconv.Itoa(fd), 0o700); err != nil {
		return
	}
	rd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(rd), "dir")
	defer f.Close()
	ents, _ := f.ReadDir(-1)
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sub, err := unix.Openat(rd, e.Name(), unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		makeWritable(sub, depth+1)
		unix.Close(sub)
	}
}

func (s *State) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("ferry: encode %s: %w", name, err)
	}
	return WriteFileAtomic(s.Path(name), append(b, '\n'))
}

// WriteFileAtomic writes data to path with mode 0600 so that a reader sees
// either the old or the whole new content, even after a crash.
func WriteFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("ferry: write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("ferry: write %s: %w", path, err)
	}
	if err := f.Chmod(fileMode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ferry: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ferry: write %s: %w", path, err)
	}
	// The rename itself must survive a crash of the host.
	if df, err := os.Open(filepath.Dir(path)); err == nil {
		df.Sync()
		df.Close()
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("ferry: read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("ferry: read %s: %w", path, err)
	}
	return nil
}

// readJSONOptional leaves v untouched when the file does not exist.
func readJSONOptional(path string, v any) error {
	err := readJSON(path, v)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// SweepStale removes the job directories under root/jobs that are older than
// olderThan, and older than their own job's timeout plus one hour (a long job
// is never swept while it may still run). Age comes from meta.json, or from
// the directory's modification time when meta.json is missing or unreadable
// (a prepare that died half-way). It returns the removed directories; errors
// of single directories are joined, the sweep goes on.
func SweepStale(root string, olderThan time.Duration) ([]string, error) {
	if olderThan <= 0 {
		olderThan = defaultSweep
	}
	jobs := filepath.Join(root, JobsDirName)
	if err := CheckChain(root, JobsDirName); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	entries, err := os.ReadDir(jobs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ferry: sweep %s: %w", jobs, err)
	}
	now := time.Now()
	var removed []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(jobs, e.Name())
		created, limit := age(dir, olderThan)
		if created.IsZero() || now.Sub(created) <= limit {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("ferry: sweep %s: %w", dir, err))
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// age returns when dir was created and how old it may get before it is stale.
func age(dir string, olderThan time.Duration) (time.Time, time.Duration) {
	var m Meta
	if err := readJSON(filepath.Join(dir, MetaFile), &m); err == nil && !m.Created.IsZero() {
		limit := olderThan
		if t := time.Duration(m.TimeoutSeconds)*time.Second + staleMargin; t > limit {
			limit = t
		}
		return m.Created, limit
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return time.Time{}, 0
	}
	return fi.ModTime(), olderThan
}
