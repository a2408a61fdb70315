package stages

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/docker/jobsocket"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/pkg/sandbox"
	"gitlab.com/ferry-ci/ferry/pkg/tmpns"
)

// The admin's sandbox settings (docs/threat-model.md).
var sandboxOpts struct {
	on       bool
	readable StringList
	writable StringList
	hide     StringList
	// privateTmp is auto (a private /tmp where the kernel allows it) or off.
	privateTmp string
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
var jobStateWritable = []string{jobTmpDir, jobCacheDir, jobstate.KubeDirName, jobVarTmpDir}

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
			sandboxOpts.privateTmp = "auto"
			fs.Func("private-tmp", "auto: give each job a private /tmp and /var/tmp in a user+mount namespace where the kernel lets an unprivileged user make one (else, and with off, /tmp stays refused and the job log names what was refused); reexec: the same, made on every stage by a re-exec of ferry instead of once per job by a holder process (5-9 ms a stage)", func(v string) error {
				if v != "auto" && v != "off" && v != "reexec" {
					return fmt.Errorf("must be auto, reexec or off, not %q", v)
				}
				sandboxOpts.privateTmp = v
				return nil
			})
			fs.Var(&sandboxOpts.hide, "sandbox-hide", "extra paths jobs may not read (comma-separated, repeatable), besides ferry's and the runner's own")
		},
		Prepare: sandboxPrepare,
		Cleanup: func(_ context.Context, j *Job) error {
			tmpns.StopHolder(j.State.Path(tmpHoldDir), 2*time.Second)
			return nil
		},
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
	return privateTmpPrepare(j)
}

// The private /tmp (pkg/tmpns): prepare probes the kernel once and records
// the mode in the job's state (read-only to the job); every stage reads it.
const (
	privateTmpFile = "private-tmp" // "on", or "off: <why>"
	jobVarTmpDir   = "vartmp"      // the job's /var/tmp in the namespace
)

// selfExe is ferry's own binary for the re-exec: the running one, even if
// an upgrade replaced the file meanwhile.
const selfExe = "/proc/self/exe"

func privateTmpPrepare(j *Job) error {
	mode := "on"
	if sandboxOpts.privateTmp == "off" {
		mode = "off: --private-tmp=off"
	} else if err := tmpns.Probe(selfExe); err != nil {
		mode = "off: " + err.Error()
	}
	if mode == "on" {
		if err := os.MkdirAll(j.State.Path(jobVarTmpDir), 0o700); err != nil {
			return fmt.Errorf("ferry: sandbox: %w", err)
		}
		if err := copySystemSSHConfig(j.State.Path(etcSSHCopy)); err != nil {
			// ssh then refuses the system's config in the namespace; the
			// rest of the job is unaffected.
			os.RemoveAll(j.State.Path(etcSSHCopy))
			j.Log.Warnf("Sandbox: %v: ssh may refuse the system's config (owned by nobody in the job's namespace)", err)
		}
	}
	if err := os.WriteFile(j.State.Path(privateTmpFile), []byte(mode+"\n"), 0o600); err != nil {
		return fmt.Errorf("ferry: sandbox: %w", err)
	}
	if mode == "on" {
		j.Log.Infof("Sandbox: private /tmp and /var/tmp (user+mount namespace): this job sees only its own temp files there")
		startTmpHolder(j)
	} else {
		j.Log.Infof("Sandbox: no private /tmp (%s): /tmp and /var/tmp are not writable, use $TMPDIR", strings.TrimPrefix(mode, "off: "))
	}
	return nil
}

// tmpHoldDir is the private /tmp's holder directory in the job state
// (pkg/tmpns: its PID file, plan, log and EnterProgram), read-only to the
// job.
const tmpHoldDir = "tmpns"

// startTmpHolder makes the job's private /tmp once, in a holder process
// every stage enters (pkg/tmpns, EnterProgram): the re-exec of ferry it
// replaces cost a stage 5 to 9 ms. Where it cannot (another architecture
// than x86-64, a failure), every stage makes it through the re-exec, as
// before; the job log says so here, once.
func startTmpHolder(j *Job) {
	const slower = "Sandbox: every stage makes its private /tmp through a re-exec of ferry (5-9 ms a stage)"
	if sandboxOpts.privateTmp == "reexec" {
		j.Log.Infof("%s: --private-tmp=reexec", slower)
		return
	}
	if !tmpns.EnterSupported() {
		j.Log.Infof("%s: the fast path is x86-64 code, this is %s", slower, runtime.GOARCH)
		return
	}
	err := func() error {
		// The stages' policy: the holder keeps its ruleset, and the
		// private /tmp's binds come from its paths.
		p, ns, err := stagePolicy(j.Env, j.Options, j.State)
		if err != nil {
			return err
		}
		owner, err := runnerProcess(j)
		if err != nil {
			return fmt.Errorf("the runner process: %w", err)
		}
		mark, err := jobproc.OpenMark(j.State.Path(jobproc.MarkFile))
		if err != nil {
			return err
		}
		defer mark.Close()
		dir := j.State.Path(tmpHoldDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		enter := filepath.Join(dir, tmpns.HoldEnterFile)
		if err := tmpns.WriteEnterProgram(enter); err != nil {
			return err
		}
		if err := tmpns.TryEnterProgram(enter); err != nil {
			return err // a noexec state dir, say
		}
		timeout := j.State.Timeout
		if timeout <= 0 {
			timeout = time.Hour
		}
		var ruleset *os.File
		if ns {
			ruleset = holdRuleset(p, dir)
		}
		if ruleset != nil {
			defer ruleset.Close()
		}
		return tmpns.StartHolder(selfExe, dir, *privateTmpSpec(j.State, p), owner, time.Now().Add(timeout+time.Hour), mark, ruleset)
	}()
	if err != nil {
		j.Log.Warnf("%s: %v", slower, err)
	}
}

// runnerProcess is the runner process of the job: above a wrapper script
// the admin may run ferry through (jobsocket.RunnerOf), else ferry's
// parent.
func runnerProcess(j *Job) (jobproc.Owner, error) {
	if pid, err := jobsocket.RunnerOf(os.Getpid(), j.Env.JobResponseFile); err == nil {
		if start, err := jobproc.StartTime(pid); err == nil {
			return jobproc.Owner{PID: pid, Start: start}, nil
		}
	}
	return jobproc.Parent()
}

// heldTmp is how a stage enters the holder's namespaces: its namespace
// files and EnterProgram.
type heldTmp struct {
	ns   *tmpns.Namespaces
	prog string
	cwd  string
}

// Close releases the namespace files (nil-safe).
func (h *heldTmp) Close() {
	if h != nil {
		h.ns.Close()
	}
}

// Held opens the job's holder for this stage, or returns nil (the stage
// then makes its private /tmp through the re-exec): no private /tmp, no
// holder (prepare said why), or one that is gone or does not match, which
// the job log says.
func (b *jobBox) Held(log *joblog.Logger) *heldTmp {
	if b == nil || b.ns == nil || b.hold == "" || sandboxOpts.privateTmp != "auto" || !tmpns.EnterSupported() {
		return nil
	}
	prog := filepath.Join(b.hold, tmpns.HoldEnterFile)
	if _, err := os.Stat(filepath.Join(b.hold, tmpns.HoldPIDFile)); err != nil {
		return nil // prepare could not start it, and said so
	}
	cwd, err := os.Getwd()
	if err != nil {
		log.Infof("Sandbox: this stage makes its private /tmp through a re-exec of ferry: %v", err)
		return nil
	}
	plan, err := b.ns.PlanWith(b.rules)
	if err == nil {
		var ns *tmpns.Namespaces
		if b.holder != nil {
			ns, err = b.holder.Namespaces(plan)
		} else {
			ns, err = tmpns.OpenHeld(b.hold, plan)
		}
		if err == nil {
			return &heldTmp{ns: ns, prog: prog, cwd: cwd}
		}
	}
	log.Infof("Sandbox: this stage makes its private /tmp through a re-exec of ferry (slower): %v", err)
	return nil
}

// privateTmpOn reports whether the job's prepare found the private /tmp
// possible (and the admin has not turned it off since).
func privateTmpOn(st *jobstate.State) bool {
	if sandboxOpts.privateTmp == "off" {
		return false
	}
	b, err := os.ReadFile(st.Path(privateTmpFile))
	return err == nil && strings.TrimSpace(string(b)) == "on"
}

// privateTmpSpec is how the job's shell is started in its private /tmp:
// TMPDIR's directory on /tmp (so $TMPDIR and /tmp hold the same files), its
// own vartmp on /var/tmp, and every path the policy lets the job reach
// bound back at its own path when it lies under them (the runner's temp dir
// with the stage script, a state or builds dir kept under /tmp).
func privateTmpSpec(st *jobstate.State, p sandbox.Policy) *tmpns.Spec {
	s := &tmpns.Spec{Tmp: st.Path(jobTmpDir), VarTmp: st.Path(jobVarTmpDir), RulesetFD: -1}
	s.Keep = append(s.Keep, p.ReadWrite...)
	s.Keep = append(s.Keep, p.ReadOnly...)
	if wd, err := os.Getwd(); err == nil {
		s.Keep = append(s.Keep, wd)
	}
	for _, name := range []string{"ssh_config", "ssh_config.d"} {
		src, dst := filepath.Join(st.Path(etcSSHCopy), name), filepath.Join(systemSSHDir, name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if _, err := os.Stat(dst); err == nil {
			s.Over = append(s.Over, [2]string{src, dst})
		}
	}
	return s
}

// In the job's user namespace root's files show as owned by nobody, and
// ssh refuses every Include'd config not owned by root or the user: the
// system's client config (which ferry's ssh shim includes, and which
// includes ssh_config.d/*.conf on Debian) is copied, owned by the runner
// user, into the job state (read-only to the job) and bound over the
// original in the namespace.
const (
	systemSSHDir = "/etc/ssh"
	etcSSHCopy   = "etc-ssh"
)

// copySystemSSHConfig copies /etc/ssh/ssh_config and the regular files of
// /etc/ssh/ssh_config.d into dir. What does not exist is left out.
func copySystemSSHConfig(dir string) error {
	files := []string{"ssh_config"}
	if ents, err := os.ReadDir(filepath.Join(systemSSHDir, "ssh_config.d")); err == nil {
		if err := os.MkdirAll(filepath.Join(dir, "ssh_config.d"), 0o700); err != nil {
			return err
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				files = append(files, filepath.Join("ssh_config.d", e.Name()))
			}
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(systemSSHDir, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("copy of the system's ssh config: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			return fmt.Errorf("copy of the system's ssh config: %w", err)
		}
	}
	return nil
}

// jobBox is the job's confinement for one stage.
type jobBox struct {
	// rules is the Landlock ruleset of the job's shell.
	rules *sandbox.Ruleset
	// ns starts the shell in its private /tmp; nil: no private /tmp.
	ns *tmpns.Spec
	// denied watches the job's output for refused paths.
	denied *denials
	// hold is the private /tmp holder's dir (tmpHoldDir) when ns is set.
	hold string
	// holder is that holder, opened when the ruleset came from it.
	holder *tmpns.Holder
}

// Rules is the ruleset (nil for a nil box).
func (b *jobBox) Rules() *sandbox.Ruleset {
	if b == nil {
		return nil
	}
	return b.rules
}

// NS is the private /tmp spec (nil for a nil box or without one).
func (b *jobBox) NS() *tmpns.Spec {
	if b == nil {
		return nil
	}
	return b.ns
}

// Close releases the ruleset.
func (b *jobBox) Close() error {
	if b == nil {
		return nil
	}
	b.holder.Close()
	return b.rules.Close()
}

// Watch wraps one of the job's output streams to notice refused paths.
func (b *jobBox) Watch(w io.Writer) io.Writer {
	if b == nil || b.denied == nil {
		return w
	}
	return b.denied.writer(w)
}

// Report says in the job log, once at the end of the stage, what path
// outside its directories the job was refused.
func (b *jobBox) Report(log *joblog.Logger) {
	if b == nil || b.denied == nil {
		return
	}
	b.denied.report(log, b.ns != nil)
}

// jobSandbox builds the job's confinement, or nil when the admin turned the
// sandbox off or the kernel cannot (prepare said so).
func jobSandbox(env *jobenv.Env, o *Options, st *jobstate.State) (*jobBox, error) {
	if !sandboxOpts.on {
		return nil, nil
	}
	if _, err := sandbox.Probe(); err != nil {
		return nil, nil
	}
	p, ns, err := stagePolicy(env, o, st)
	if err != nil {
		return nil, err
	}
	rs, holder := heldRuleset(st, p, ns)
	if rs == nil {
		if rs, err = p.Build(); err != nil {
			return nil, fmt.Errorf("ferry: sandbox: %w", err)
		}
	}
	b := &jobBox{rules: rs, holder: holder, denied: newDenials(p.ReadWrite, st.Path(jobTmpDir))}
	if ns {
		b.ns = privateTmpSpec(st, p)
		b.hold = st.Path(tmpHoldDir)
	}
	return b, nil
}

// stagePolicy is the policy of the job's shell: jobPolicy, and whether it
// runs in a private /tmp.
func stagePolicy(env *jobenv.Env, o *Options, st *jobstate.State) (sandbox.Policy, bool, error) {
	p, err := jobPolicy(env, o, st)
	if err != nil {
		return p, false, err
	}
	ns := privateTmpOn(st)
	if ns {
		// The host's /tmp and /var/tmp are out of sight in the namespace
		// anyway: hidden whole, they cost one rule instead of one per
		// entry on the way to a hidden path below them (the job's own
		// paths there keep their rules).
		p.Hide = append(p.Hide, "/tmp", "/var/tmp")
	}
	return p, ns, nil
}

// heldRuleset is the ruleset prepare built for the job and gave its
// private /tmp's holder to keep, if it is still the one p.Build would make
// (sandbox.Stamp), and the holder, opened for the stage's namespaces too:
// building the ruleset again was most of what the sandbox added to a
// stage. nil: build it (no holder, no stamp, a stamp out of date, or a
// holder that cannot be reached: each costs only this stage's build).
func heldRuleset(st *jobstate.State, p sandbox.Policy, ns bool) (*sandbox.Ruleset, *tmpns.Holder) {
	if !ns || sandboxOpts.privateTmp != "auto" {
		return nil, nil
	}
	dir := st.Path(tmpHoldDir)
	b, err := os.ReadFile(filepath.Join(dir, tmpns.HoldStampFile))
	if err != nil {
		return nil, nil
	}
	var stamp sandbox.Stamp
	if stamp.UnmarshalText(b) != nil {
		return nil, nil
	}
	current, abi, lookups := stamp.Current(p)
	if !current {
		return nil, nil
	}
	h, err := tmpns.OpenHolder(dir, st.Path(jobTmpDir))
	if err != nil {
		return nil, nil
	}
	fd, err := h.Ruleset()
	if err != nil {
		h.Close()
		return nil, nil
	}
	rs, err := sandbox.Adopt(fd, abi, lookups)
	if err != nil {
		h.Close()
		return nil, nil
	}
	return rs, h
}

// holdRuleset builds p's ruleset (the stages' policy) for the holder to keep,
// and writes its stamp where stages read it. nil: the holder keeps none,
// and every stage builds its own.
func holdRuleset(p sandbox.Policy, dir string) *os.File {
	rs, stamp, err := p.BuildStamped()
	if err != nil {
		return nil
	}
	text, err := stamp.MarshalText()
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, tmpns.HoldStampFile), text, 0o600)
	}
	if err != nil {
		rs.Close()
		return nil
	}
	return os.NewFile(uintptr(rs.FD()), "landlock-ruleset")
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
	home, _ := env.LookupEnv("HOME")
	for _, d := range own {
		p.Hide = append(p.Hide, runnerTempHide(d, home)...)
	}
	p.Hide = append(p.Hide, sandboxOpts.hide...)

	// The job's own runner temp dir (its stage scripts, its payload) is
	// readable again inside the hidden temp root.
	p.ReadOnly = append(p.ReadOnly, own...)
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

// runnerTempHide is what hides the runner's per-job temp dirs of other jobs
// (gitlab-runner makes them with MkdirTemp("", "custom-executor") beside
// own). The whole temp root is hidden, one rule that costs the same with 20
// or 2,000 entries there (the job's own dir is granted back as ReadOnly):
// granting read on every other entry instead cost ~50 us an entry, 98 ms a
// stage on a busy runner. A temp root that is "/" or holds the runner
// user's home is not a temp root to hide whole: there only the
// custom-executor* siblings are hidden, one rule each.
func runnerTempHide(own, home string) []string {
	root := filepath.Dir(own)
	if root == own || root == "/" {
		return otherRunnerTemps(own)
	}
	if home != "" {
		if h, err := filepath.Abs(home); err == nil && (h == root || within(h, root)) {
			return otherRunnerTemps(own)
		}
	}
	return []string{root}
}

// otherRunnerTemps lists the runner's per-job temp dirs beside own.
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

// enterHeldCommand turns cmd (`bash script`, ExtraFiles sized up to the
// mark) into EnterProgram entering the holder's namespaces h, then
// starting bash in h.cwd. The caller starts it from the thread the job's
// ruleset restricts.
func enterHeldCommand(cmd *exec.Cmd, h *heldTmp, script string) error {
	if cmd.Err != nil {
		return fmt.Errorf("ferry: bash: %w", cmd.Err)
	}
	bash, err := filepath.Abs(cmd.Path) // exec.Command looked bash up
	if err != nil {
		return fmt.Errorf("ferry: bash: %w", err)
	}
	cmd.Path = h.prog
	cmd.Args = []string{h.prog, h.cwd, bash, script}
	cmd.ExtraFiles[tmpns.UserFD-3] = h.ns.User
	cmd.ExtraFiles[tmpns.MntFD-3] = h.ns.Mnt
	return nil
}

// rulesetFD is the descriptor the re-exec finds the Landlock ruleset on,
// just below the job's mark.
const rulesetFD = jobproc.MarkFD - 1

// privateTmpCommand turns cmd (`bash script`, ExtraFiles sized up to the
// mark) into ferry's re-exec that starts it in the private /tmp ns
// describes, handing it the ruleset rs on rulesetFD. The returned file is
// ferry's copy of that descriptor, to close once bash has started.
func privateTmpCommand(cmd *exec.Cmd, ns tmpns.Spec, script string, rs *sandbox.Ruleset) (*os.File, error) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		return nil, fmt.Errorf("ferry: bash: %w", err)
	}
	if bash, err = filepath.Abs(bash); err != nil {
		return nil, fmt.Errorf("ferry: bash: %w", err)
	}
	ns.Argv = []string{bash, script}
	var f *os.File
	if rs != nil {
		fd, err := unix.FcntlInt(uintptr(rs.FD()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("ferry: sandbox: %w", err)
		}
		f = os.NewFile(uintptr(fd), "landlock-ruleset")
		cmd.ExtraFiles[rulesetFD-3] = f
		ns.RulesetFD = rulesetFD
	}
	cmd.Path = selfExe
	cmd.Args = append([]string{"ferry"}, ns.Args()...)
	tmpns.SetSysProcAttr(cmd.SysProcAttr)
	return f, nil
}
