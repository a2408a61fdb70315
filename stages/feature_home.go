package stages

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobhome"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/pkg/namelist"
)

// The admin's home settings (docs/home.md).
var homeOpts struct {
	mode       string
	seed       StringList
	seedSkip   StringList
	staleAfter time.Duration
	sshShim    bool
}

// defaultHomeSeed is what a new project home starts from, relative to the
// runner user's home: what a shell-runner admin prepares for every job
// (git's safe.directory and url rewrites, ssh host aliases and trusted host
// keys). Never a key, token or client credential (runnerSecrets).
var defaultHomeSeed = []string{".gitconfig", ".config/git/config", ".ssh/config", ".ssh/known_hosts"}

// homeSeedAllowed are the files inside a hidden runner-secret hierarchy
// (~/.ssh) that hold no secret: a home may be seeded with them.
var homeSeedAllowed = map[string]bool{".ssh/config": true, ".ssh/known_hosts": true, ".ssh/known_hosts2": true}

// Files in the job's state dir (read-only to the job).
const (
	homeDirFile   = "home.dir"   // the job's home, for run's sandbox
	jobHomeName   = "home"       // --job-home=job: the home, removed with the state dir
	sshConfigName = "ssh_config" // the ssh shim's -F
)

func init() {
	Register(Feature{
		Name: "home",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&homeOpts.mode, "job-home", jobhome.ModeProject, "the job's HOME: project (a home per project on this host, kept between its jobs), job (a fresh home per job, removed at cleanup) or runner (the runner user's own home, shared by every project: a warning in every job)")
			fs.Var(&homeOpts.seed, "home-seed", "more files or directories of the runner user's home a job home starts from (relative to it; comma-separated, repeatable), besides "+strings.Join(defaultHomeSeed, ","))
			fs.Var(&homeOpts.seedSkip, "home-seed-skip", "entries of the default seed list not to copy (comma-separated, repeatable); copies already made and not edited are removed")
			fs.DurationVar(&homeOpts.staleAfter, "home-stale-after", 30*24*time.Hour, "prepare removes the homes of projects that have run no job for this long")
			fs.BoolVar(&homeOpts.sshShim, "home-ssh-shim", true, "put ssh, scp and sftp shims first on the job's PATH so that they read the job's HOME (~/.ssh/config, known_hosts, keys), not the passwd entry's")
		},
		Prepare: homePrepare,
	})
	AllowJobWrite(homeWritable)
}

// homeSeedPlan validates the admin's lists: entries inside the home, none
// a runner secret (a hidden file) or ferry's own directories.
func homeSeedPlan(env *jobenv.Env, o *Options) (jobhome.SeedPlan, error) {
	runnerHome, _ := env.LookupEnv("HOME")
	p := jobhome.SeedPlan{From: runnerHome}
	if runnerHome == "" || runnerHome == "/" {
		return p, nil
	}
	skip := map[string]bool{}
	for _, e := range homeOpts.seedSkip {
		c, err := jobhome.CleanEntry(e)
		if err != nil {
			return p, fmt.Errorf("ferry: --home-seed-skip: %v", err)
		}
		skip[c] = true
	}
	// Paths under the runner's home no job home may be seeded from.
	var never []string
	never = append(never, runnerSecrets...)
	for _, d := range []string{o.StateDir, o.BuildsDir, o.CacheDir} {
		if a, err := filepath.Abs(d); err == nil && d != "" && within(a, runnerHome) && a != runnerHome {
			r, _ := filepath.Rel(runnerHome, a)
			never = append(never, filepath.ToSlash(r))
		}
	}
	secret := func(rel string) bool {
		if homeSeedAllowed[rel] {
			return false
		}
		for _, s := range never {
			if rel == s || strings.HasPrefix(rel, s+"/") {
				return true
			}
		}
		return false
	}
	for _, e := range homeOpts.seed {
		c, err := jobhome.CleanEntry(e)
		if err != nil {
			return p, fmt.Errorf("ferry: --home-seed: %v", err)
		}
		if secret(c) {
			return p, fmt.Errorf("ferry: --home-seed: %s is a secret of the runner user or ferry's own directory, hidden from jobs: it cannot seed a job's home", e)
		}
		p.Entries = append(p.Entries, c)
	}
	for _, e := range defaultHomeSeed {
		if !skip[e] {
			p.Entries = append(p.Entries, e)
		}
	}
	// A seeded directory is walked: the secrets inside it stay out.
	p.Skip = func(rel string) bool { return secret(rel) || skip[rel] }
	return p, nil
}

// homeFor is where the job's home is, "" in runner mode: the project's
// (keyed on the payload's project id and the instance, never a job
// variable), or the job's own when there is no project id or the admin
// chose a home per job.
func homeFor(st *jobstate.State, payload *jobenv.JobResponse) (dir string, kept bool) {
	switch homeOpts.mode {
	case jobhome.ModeRunner:
		return "", false
	case jobhome.ModeProject:
		if payload != nil && payload.JobInfo.ProjectID > 0 {
			return jobhome.Dir(st.Root(), st.Job().ServerURL, payload.JobInfo.ProjectID), true
		}
	}
	return st.Path(jobHomeName), false
}

// homeWritable is the job's home for the sandbox: prepare recorded it in
// the state dir, which the job cannot write.
func homeWritable(_ *jobenv.Env, _ *Options, st *jobstate.State) []string {
	b, err := os.ReadFile(st.Path(homeDirFile))
	if err != nil {
		return nil
	}
	d := strings.TrimSpace(string(b))
	// Only a home ferry makes: the project's under <state>/homes, or the job's own.
	if d != st.Path(jobHomeName) && filepath.Dir(d) != filepath.Join(st.Root(), jobhome.DirName) {
		return nil
	}
	return []string{d}
}

func homePrepare(_ context.Context, j *Job) error {
	switch homeOpts.mode {
	case jobhome.ModeProject, jobhome.ModeJob, jobhome.ModeRunner:
	default:
		return fmt.Errorf("ferry: --job-home %q: want project, job or runner", homeOpts.mode)
	}
	start := time.Now()
	home, kept := homeFor(j.State, j.Payload)
	if home == "" {
		runnerHome, _ := j.Env.LookupEnv("HOME")
		if sandboxOpts.on {
			j.Log.Warnf("Home: HOME is the runner user's home %s (--job-home=runner), shared by every project on this runner; the sandbox keeps it read-only to jobs", runnerHome)
		} else {
			j.Log.Warnf("Home: HOME is the runner user's home %s (--job-home=runner), shared by every project on this runner: what one project writes there (git config, known_hosts, tool caches) reaches every other", runnerHome)
		}
		return homeSweep(j, "")
	}
	plan, err := homeSeedPlan(j.Env, j.Options)
	if err != nil {
		return err
	}
	if err := jobhome.Ensure(j.State.Root(), home); err != nil {
		return err
	}
	var rec jobhome.Record
	var res jobhome.SyncResult
	if kept {
		unlock, err := jobhome.Lock(home, true)
		if err != nil {
			return fmt.Errorf("ferry: home %s: lock: %w", home, err)
		}
		defer unlock()
		if rec, err = jobhome.ReadRecord(home); err != nil {
			return err
		}
	}
	plan.Durable = kept
	res, serr := jobhome.Sync(home, &rec, plan)
	if serr != nil {
		// A file the project put in the way must not fail its job.
		j.Log.Warnf("%v", serr)
	}
	if kept {
		rec.LastUsed = time.Now().UTC()
		rec.TimeoutSeconds = int64(j.State.Timeout / time.Second)
		if err := jobhome.WriteRecord(home, rec); err != nil {
			return err
		}
	}
	// Plain writes (no fsync, ~10 ms each on a busy disk): files of this
	// job's state dir, which only ferry writes and which do not outlive
	// a crash of the job.
	if err := os.WriteFile(j.State.Path(homeDirFile), []byte(home+"\n"), 0o600); err != nil {
		return fmt.Errorf("ferry: home: %w", err)
	}
	sshEnv, err := homeSSH(j, home)
	if err != nil {
		return err
	}
	if err := homeEnv(j, home, sshEnv); err != nil {
		return err
	}
	what := "this project's home, kept between its jobs"
	if !kept {
		what = "a fresh home for this job, removed at cleanup"
	}
	j.Log.Infof("Home: HOME=%s (%s; XDG dirs inside) ready in %s", home, what, time.Since(start).Round(time.Millisecond))
	if n := len(res.Copied) + len(res.Updated); n > 0 {
		j.Log.Infof("Home: from the runner user's home: %s", namelist.Short(append(res.Copied, res.Updated...), 6))
	}
	if len(res.Kept) > 0 && kept {
		j.Log.Infof("Home: this project's own %s kept (the runner user's version differs; remove the file to take it again)", namelist.Short(res.Kept, 6))
	}
	return homeSweep(j, home)
}

// homeEnv gives the job its HOME through env.json: ferry's wins over a
// job's own HOME variable (GITLAB_ENV), so a `variables: HOME:` cannot
// silently put the job back in the runner user's home; the XDG dirs follow
// it unless the job set one itself (pointing a tool's cache into the build
// dir for `cache:` is a common, legitimate choice).
func homeEnv(j *Job, home string, more []jobstate.EnvVar) error {
	vars := j.Env.JobVars()
	if v, ok := vars["HOME"]; ok && v != home {
		j.Log.Warnf("Home: the job's HOME variable (%s) is replaced by this project's home; set XDG_CACHE_HOME, XDG_CONFIG_HOME or a tool's own variable to move a tool's files", v)
	}
	envs := []jobstate.EnvVar{{Key: "HOME", Value: home}}
	for _, x := range jobhome.XDG {
		if _, own := vars[x.Var]; !own {
			envs = append(envs, jobstate.EnvVar{Key: x.Var, Value: filepath.Join(home, x.Rel)})
		}
	}
	// One write of env.json (each is fsynced).
	return j.State.AddEnvs(append(envs, more...))
}

// SelfVar is set by the ferry binary for the engine it hands a call to:
// its own path (the runner's process environment, which no job variable
// reaches).
const SelfVar = "FERRY_SELF"

// homeSSH writes the job's ssh config and links the shims in its bin dir;
// it returns the variable that names the config.
func homeSSH(j *Job, home string) ([]jobstate.EnvVar, error) {
	if !homeOpts.sshShim {
		return nil, nil
	}
	var extraKeys []string
	if !sandboxOpts.on {
		// Unconfined jobs could always use the runner user's keys (the
		// shell executor's behaviour an admin may rely on): keep them as
		// defaults after the home's own.
		if rh, ok := j.Env.LookupEnv("HOME"); ok && rh != "" {
			for _, k := range []string{"id_rsa", "id_ecdsa", "id_ed25519"} {
				extraKeys = append(extraKeys, filepath.Join(rh, ".ssh", k))
			}
		}
	}
	cfg := j.State.Path(sshConfigName)
	if err := os.WriteFile(cfg, jobhome.SSHConfig(home, extraKeys), 0o600); err != nil {
		return nil, fmt.Errorf("ferry: ssh shim: %w", err)
	}
	// The small ferry binary starts fastest (measured: the engine and the
	// job's kubectl link client-go or kubectl code and take tens of ms
	// more to start); all three answer to argv[0] ssh, scp and sftp.
	self := os.Getenv(SelfVar)
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("ferry: ssh shim: locating the ferry binary: %w", err)
		}
	}
	target, err := filepath.EvalSymlinks(self)
	if err != nil {
		return nil, fmt.Errorf("ferry: ssh shim: %w", err)
	}
	bin := j.State.BinDir()
	if err := os.MkdirAll(bin, 0o700); err != nil {
		return nil, fmt.Errorf("ferry: ssh shim: %w", err)
	}
	for _, n := range jobhome.SSHShimNames {
		link := filepath.Join(bin, n)
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("ferry: ssh shim: %w", err)
		}
		if err := os.Symlink(target, link); err != nil {
			return nil, fmt.Errorf("ferry: ssh shim: %w", err)
		}
	}
	return []jobstate.EnvVar{{Key: jobhome.SSHConfigVar, Value: cfg}}, nil
}

// homeSweep removes the homes of projects idle for --home-stale-after.
func homeSweep(j *Job, keep string) error {
	removed, err := jobhome.SweepStale(j.State.Root(), homeOpts.staleAfter, keep)
	if len(removed) > 0 {
		names := make([]string, len(removed))
		for i, r := range removed {
			names[i] = path.Base(r)
		}
		j.Log.Infof("Home: removed %d home(s) of projects idle for more than %s: %s", len(removed), homeOpts.staleAfter, namelist.Short(names, 4))
	}
	if err != nil {
		// Another project's leftover must not fail this job.
		j.Log.Warnf("%v", err)
	}
	return nil
}
