package stages

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/pkg/sandbox"
)

// The admin's sandbox settings (docs/threat-model.md).
var sandboxOpts struct {
	on       bool
	readable StringList
	writable StringList
	hide     StringList
}

// Job-state entries the job itself may write; everything else there
// (secrets.json, env.json, cleanup.json, bin/, ...) steers ferry and is
// read-only to the job.
const (
	jobTmpDir   = "tmp"   // the job's TMPDIR
	jobCacheDir = "cache" // the job's own discovery and HTTP caches
)

// jobStateWritable are the job-state entries the job may write. A feature
// that keeps per-job client state the job's tools must update (a Docker
// client config, say) adds its entry with AllowJobStateWrite from init().
var jobStateWritable = []string{jobTmpDir, jobCacheDir, jobstate.KubeDirName}

// AllowJobStateWrite lets the job write <job state>/<name> (a file or a
// directory hierarchy). Call it from init(): never for files that steer
// ferry (env.json, secrets.json, cleanup.json, bin/).
func AllowJobStateWrite(name string) { jobStateWritable = append(jobStateWritable, name) }

// jobReadable give paths inside hidden ones (the runner user's secrets)
// that a job may read: a feature adds one with AllowJobRead from init().
var jobReadable []func(env *jobenv.Env) []string

// AllowJobRead lets the job read (and execute) what paths returns, even
// inside a hidden hierarchy. paths sees only the runner's environment,
// never a file the job could write: only what the runner user installed.
func AllowJobRead(paths func(env *jobenv.Env) []string) { jobReadable = append(jobReadable, paths) }

// jobWritable give more paths a job may write (its home, say), computed
// per job: a feature adds one with AllowJobWrite from init(). paths must
// only come from what ferry recorded (the job state), never from a file
// the job could write.
var jobWritable []func(env *jobenv.Env, o *Options, st *jobstate.State) []string

// AllowJobWrite lets the job write (and read) what paths returns.
func AllowJobWrite(paths func(env *jobenv.Env, o *Options, st *jobstate.State) []string) {
	jobWritable = append(jobWritable, paths)
}

// runnerSecrets are the runner user's files no job may read, relative to
// its home directory.
var runnerSecrets = []string{
	".ssh", ".docker", ".kube", ".gnupg", ".netrc", ".git-credentials", ".aws",
	".config/gcloud", ".azure", ".config/gh", ".npmrc", ".pypirc", ".vault-token",
	".gitlab-runner", ".terraform.d", ".m2/settings.xml", ".m2/settings-security.xml",
}

func init() {
	Register(Feature{
		Name: "sandbox",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&sandboxOpts.on, "sandbox", true, "confine every job with Landlock: it writes only its build dir, cache dir, TMPDIR and kubeconfig, reads neither other jobs nor the runner user's secrets, and cannot signal or trace processes outside it (Linux 5.19+; off with a warning on older kernels)")
			fs.Var(&sandboxOpts.readable, "sandbox-readable", "extra paths jobs may read inside hidden ones (comma-separated, repeatable)")
			fs.Var(&sandboxOpts.writable, "sandbox-writable", "extra paths jobs may write (comma-separated, repeatable); each is shared by every job")
			fs.Var(&sandboxOpts.hide, "sandbox-hide", "extra paths jobs may not read (comma-separated, repeatable), besides ferry's and the runner's own")
		},
		Prepare: sandboxPrepare,
	})
}

// sandboxPrepare creates the job's writable state entries and says in the
// job log whether the job runs confined.
func sandboxPrepare(_ context.Context, j *Job) error {
	if !sandboxOpts.on {
		j.Log.Warnf("Sandbox: off (--sandbox=false): this job can read other jobs' files and the runner user's secrets")
		return nil
	}
	for _, d := range []string{jobTmpDir, jobCacheDir} {
		if err := os.MkdirAll(j.State.Path(d), 0o700); err != nil {
			return fmt.Errorf("ferry: sandbox: %w", err)
		}
	}
	abi, err := sandbox.Probe()
	if err != nil {
		j.Log.Warnf("Sandbox: unavailable, the job runs unconfined: %v", err)
		return nil
	}
	scopes := ""
	if abi >= 6 {
		scopes = ", signals and abstract sockets scoped"
	}
	j.Log.Infof("Sandbox: on (Landlock ABI %d%s): writes only its build dir, cache, TMPDIR and kubeconfig; other jobs and the runner's secrets hidden", abi, scopes)
	return nil
}

// jobSandbox builds the Landlock ruleset of the job's script, or nil when
// the admin turned the sandbox off or the kernel cannot (prepare said so).
func jobSandbox(env *jobenv.Env, o *Options, st *jobstate.State) (*sandbox.Ruleset, error) {
	if !sandboxOpts.on {
		return nil, nil
	}
	if _, err := sandbox.Probe(); err != nil {
		return nil, nil
	}
	p, err := jobPolicy(env, o, st)
	if err != nil {
		return nil, err
	}
	rs, err := p.Build()
	if err != nil {
		return nil, fmt.Errorf("ferry: sandbox: %w", err)
	}
	return rs, nil
}

// jobPolicy is what one job may reach (docs/threat-model.md).
func jobPolicy(env *jobenv.Env, o *Options, st *jobstate.State) (sandbox.Policy, error) {
	var p sandbox.Policy
	abs := func(s string) string {
		if s == "" {
			return ""
		}
		a, err := filepath.Abs(s)
		if err != nil {
			return ""
		}
		return a
	}
	stateRoot, buildsRoot, cacheRoot := abs(o.StateDir), abs(o.BuildsDir), abs(o.CacheDir)
	if stateRoot == "" || buildsRoot == "" || cacheRoot == "" {
		return p, fmt.Errorf("ferry: sandbox: --state-dir, --builds-dir and --cache-dir are needed")
	}
	// Shared by all jobs: the state root (other jobs' credentials, the
	// engine, caches), every build and cache dir.
	p.Hide = append(p.Hide, stateRoot, buildsRoot, cacheRoot, "/etc/gitlab-runner")
	if home, ok := env.LookupEnv("HOME"); ok && home != "" && home != "/" {
		for _, s := range runnerSecrets {
			p.Hide = append(p.Hide, filepath.Join(home, s))
		}
	}
	// The runner's temp dirs of other jobs hold their JOB_RESPONSE_FILE
	// and stage scripts, every variable in clear.
	own := []string{}
	if t, ok := env.LookupEnv("TMPDIR"); ok && t != "" {
		own = append(own, abs(t))
	}
	if env.JobResponseFile != "" {
		own = append(own, filepath.Dir(abs(env.JobResponseFile)))
	}
	for _, d := range own {
		p.Hide = append(p.Hide, otherRunnerTemps(d)...)
	}
	p.Hide = append(p.Hide, sandboxOpts.hide...)

	// The job's own runner temp dir (its stage scripts) is not hidden, so
	// it is readable like the rest of the system.
	p.ReadOnly = append(p.ReadOnly, st.Dir(), filepath.Join(stateRoot, enginebin.DirName))
	p.ReadOnly = append(p.ReadOnly, sandboxOpts.readable...)
	for _, f := range jobReadable {
		p.ReadOnly = append(p.ReadOnly, f(env)...)
	}

	for _, name := range jobStateWritable {
		p.ReadWrite = append(p.ReadWrite, st.Path(name))
	}
	p.ReadWrite = append(p.ReadWrite, jobBuildDirs(env, o)...)
	p.ReadWrite = append(p.ReadWrite, sandboxOpts.writable...)
	for _, f := range jobWritable {
		p.ReadWrite = append(p.ReadWrite, f(env, o, st)...)
	}
	p.Devices = []string{"/dev"}
	return p, nil
}

// otherRunnerTemps lists the runner's per-job temp dirs beside own
// (gitlab-runner makes them with MkdirTemp("", "custom-executor")).
func otherRunnerTemps(own string) []string {
	parent := filepath.Dir(own)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join(parent, e.Name())
		if p != own && strings.HasPrefix(e.Name(), "custom-executor") {
			out = append(out, p)
		}
	}
	return out
}

// jobBuildDirs are the directories the runner builds and caches this job
// in. When `ferry config` could key them on the payload's project id, the
// whole builds_dir and cache_dir are this project's alone (a clone removes
// and recreates the project dir, which needs its parent). Otherwise only
// CI_PROJECT_DIR and its .tmp sibling, and only if they are inside the
// builds_dir: a job variable can set CI_PROJECT_DIR.
func jobBuildDirs(env *jobenv.Env, o *Options) []string {
	c, err := Config(env, o)
	if err != nil {
		return nil
	}
	var dirs []string
	if payloadProjectID(env) != "" {
		dirs = append(dirs, c.BuildsDir, c.CacheDir)
	} else if pd, _ := env.JobVar("CI_PROJECT_DIR"); filepath.IsAbs(pd) && filepath.Clean(pd) != c.BuildsDir && within(filepath.Clean(pd), c.BuildsDir) {
		pd = filepath.Clean(pd)
		dirs = append(dirs, pd, pd+".tmp")
	}
	for _, d := range dirs {
		// Made here so the rule has a directory to hold on to; the
		// runner's own mkdir -p then finds it.
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil
		}
	}
	return dirs
}
