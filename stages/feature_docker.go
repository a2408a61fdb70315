package stages

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/docker/clientconfig"
	"gitlab.com/ferry-ci/ferry/pkg/docker/holder"
	"gitlab.com/ferry-ci/ferry/pkg/docker/jobsocket"
	"gitlab.com/ferry-ci/ferry/pkg/docker/sshdial"
	"gitlab.com/ferry-ci/ferry/pkg/failure"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/namelist"
)

// dockerFlags are the runner admin's --docker-* settings (docs/docker.md).
var dockerFlags struct {
	Enabled          bool
	Contexts         bool
	AllowTOFU        bool
	PreflightTimeout time.Duration
}

// The job variables of the ferry way (docs/docker.md).
const (
	dockerHostVar   = "DOCKER_HOST"
	sshKeyVar       = "SSH_PRIVATE_KEY"
	sshPassVar      = "SSH_PRIVATE_KEY_PASSPHRASE"
	sshKnownHostVar = "SSH_KNOWN_HOSTS"
	dockerDirName   = "docker" // in the job state dir: the holder's directory
)

func init() {
	// docker login / docker context use write the job's own DOCKER_CONFIG:
	// the sandbox lets the job write that directory (and nothing else of
	// the holder's: its sockets are connected to, not written).
	AllowJobStateWrite(filepath.Join(dockerDirName, holder.ConfigDir))
	// The runner user's CLI plugins (`docker compose` v2 in
	// ~/.docker/cli-plugins) are listed in the job's DOCKER_CONFIG
	// (clientconfig): the job may read and run them, and nothing else of
	// the hidden ~/.docker.
	AllowJobRead(func(env *jobenv.Env) []string {
		if !dockerFlags.Enabled {
			return nil
		}
		if d := filepath.Join(runnerDockerConfig(env), "cli-plugins"); filepath.IsAbs(d) {
			return []string{d}
		}
		return nil
	})
	Register(Feature{
		Name: "docker",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&dockerFlags.Enabled, "docker", true, "give each job a private Docker client config (DOCKER_CONFIG) and hold its SSH connections to Docker engines (DOCKER_HOST=ssh://, ssh:// contexts)")
			fs.BoolVar(&dockerFlags.Contexts, "docker-contexts", true, "serve the runner user's ssh:// docker contexts to jobs through ferry (its SSH key stays outside the job)")
			fs.BoolVar(&dockerFlags.AllowTOFU, "docker-allow-tofu", false, "accept an unknown SSH host key when SSH_KNOWN_HOSTS is not set (trust on first use, with a warning)")
			fs.DurationVar(&dockerFlags.PreflightTimeout, "docker-preflight-timeout", 15*time.Second, "how long the Docker connection check in prepare may take")
		},
		Prepare:     dockerPrepare,
		BeforeStage: dockerBeforeStage,
		DuringStage: dockerDuringStage,
		RunsBefore:  dockerRunsBefore,
		Cleanup: func(_ context.Context, j *Job) error {
			return holder.Stop(j.State.Path(dockerDirName))
		},
	})
}

// runnerDockerConfig is the runner user's Docker client config dir: the
// runner's DOCKER_CONFIG, else ~/.docker.
func runnerDockerConfig(env *jobenv.Env) string {
	if v, ok := env.LookupEnv("DOCKER_CONFIG"); ok && v != "" {
		return v
	}
	return filepath.Join(env.Getenv("HOME"), ".docker")
}

func dockerPrepare(ctx context.Context, j *Job) error {
	if !dockerFlags.Enabled {
		return nil
	}
	vars := j.Env.JobVars()
	dir := j.State.Path(dockerDirName)
	hostURL := strings.TrimSpace(vars[dockerHostVar])
	viaVar := strings.HasPrefix(hostURL, "ssh://")
	if err := dockerSecrets(j, vars, viaVar); err != nil {
		return err
	}

	// The job's own DOCKER_CONFIG, unless the job chose one itself.
	var cc *clientconfig.Result
	if _, own := vars["DOCKER_CONFIG"]; !own {
		from := runnerDockerConfig(j.Env)
		socketFor := func(hash string) string { return filepath.Join(dir, "ctx-"+hash[:12]+".sock") }
		var err error
		cc, err = clientconfig.Build(from, filepath.Join(dir, holder.ConfigDir), socketFor)
		if err != nil {
			// A broken runner-user config must not fail every job: the job
			// gets an empty private one.
			j.Log.Warnf("%v; the job's DOCKER_CONFIG starts empty", err)
			if cc, err = clientconfig.Build("", filepath.Join(dir, holder.ConfigDir), socketFor); err != nil {
				return err
			}
		}
		if err := j.State.AddEnv("DOCKER_CONFIG", cc.Dir, false); err != nil {
			return err
		}
		if !dockerFlags.Contexts {
			cc.SSHContexts = nil
		}
	}
	var eps []holder.Endpoint
	if viaVar {
		ep, err := dockerVarEndpoint(j, vars, hostURL, dir)
		if err != nil {
			return err
		}
		eps = append(eps, ep)
	}
	if cc != nil {
		home := j.Env.Getenv("HOME")
		for _, c := range cc.SSHContexts {
			r, err := sshdial.ResolveOpenSSH(ctx, c.URL, home)
			if err != nil {
				j.Log.Warnf("ferry: docker context %s: host %s: %v (left as is)", c.Name, c.URL, err)
				continue
			}
			eps = append(eps, holder.Endpoint{Name: c.Name, Socket: c.Socket, URL: r.Target.String(),
				KeyFiles: r.KeyFiles, KnownHostsFiles: r.KnownHostsFiles,
				Names: sshdial.Names{Host: "docker context " + c.Name, Key: "the runner user's SSH key", KnownHosts: "the runner user's known_hosts"}})
		}
	}
	if len(eps) == 0 {
		return nil // a private DOCKER_CONFIG, nothing to hold
	}
	start := time.Now()
	end := j.Log.Section("ferry_docker", "Docker over SSH", true)
	defer end()
	jrf := j.Env.JobResponseFile
	runner, err := jobsocket.RunnerOf(os.Getpid(), jrf)
	if err != nil {
		return fmt.Errorf("ferry: docker: cannot find the runner process: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("ferry: docker: %w", err)
	}
	timeout := j.State.Timeout
	if timeout <= 0 {
		timeout = 24 * time.Hour
	}
	token, _ := j.Env.JobVar("CI_JOB_TOKEN")
	cfg := holder.Config{
		Dir:              dir,
		Policy:           jobsocket.Policy{UID: os.Getuid(), JobResponseFile: jrf, RunnerPID: runner},
		Deadline:         time.Now().Add(timeout + time.Hour),
		JobToken:         token,
		PreflightTimeout: dockerFlags.PreflightTimeout,
		Endpoints:        eps,
		CleanupDone:      j.State.Dir(),
	}
	if cc != nil {
		cfg.DockerConfig = cc.Dir
	}
	if cfg.Guard, err = jobDeployGuard(j); err != nil {
		return err
	}
	if lockFlags.Enabled {
		// The deploy lock per compose project and stack (--deploy-lock,
		// shared with the Kubernetes lock; docs/deploy-safety.md).
		if lockFlags.Lease < 3*time.Second {
			return fmt.Errorf("ferry: --deploy-lock-lease %s: at least 3s", lockFlags.Lease)
		}
		id := j.State.Job()
		pipeline := vars["CI_PIPELINE_ID"]
		if j.Payload != nil && j.Payload.JobInfo.PipelineID > 0 {
			pipeline = strconv.FormatInt(j.Payload.JobInfo.PipelineID, 10)
		}
		project := vars["CI_PROJECT_PATH"]
		if project == "" {
			project = "a project"
		}
		cfg.Lock = &holder.LockConfig{
			TTL:      lockFlags.Lease,
			Holder:   fmt.Sprintf("%s pipeline %s job %d", project, pipeline, id.ID),
			Deadline: time.Now().Add(timeout),
		}
		if p := j.Env.Getenv("CUSTOM_ENV_CI_PROJECT_DIR"); filepath.IsAbs(p) {
			cfg.Lock.ProjectDir = filepath.Clean(p)
		}
	}
	rep, err := holder.Start(ctx, exe, cfg, dockerFlags.PreflightTimeout+5*time.Second)
	if err != nil {
		if rep.Build {
			return failure.Build(err)
		}
		return err
	}
	for _, e := range rep.Engines {
		j.Log.Noticef("%s", e)
	}
	if viaVar {
		if err := j.State.AddEnv(dockerHostVar, "unix://"+filepath.Join(dir, "docker.sock"), false); err != nil {
			return err
		}
		j.Log.Infof("DOCKER_HOST points to this job's private socket; ferry holds the SSH connection (the key is never written to disk).")
	}
	for _, ep := range eps {
		if ep.Name != "" {
			j.Log.Infof("docker context %s (%s) goes through ferry on first use; the runner user's SSH key stays outside the job.", ep.Name, ep.URL)
		}
	}
	if cc != nil {
		j.Log.Infof("Docker client state (docker login, docker context use) stays in this job's DOCKER_CONFIG, removed at cleanup.")
	}
	j.Log.Infof("Ready in %s.", time.Since(start).Round(time.Millisecond))
	return nil
}

// dockerSecrets registers, before anything can fail, every string of the
// job's Docker credentials: the key's lines, its passphrase, and the `auth`
// values docker login derives from the job's passwords.
func dockerSecrets(j *Job, vars map[string]string, viaVar bool) error {
	var s []string
	if v := vars[sshKeyVar]; v != "" {
		s = append(s, strings.TrimSpace(v))
		if pem, err := sshdial.DecodeKey(v); err == nil {
			s = append(s, sshdial.KeySecrets(pem)...)
		}
	}
	if v := vars[sshPassVar]; v != "" {
		s = append(s, v)
	}
	var passwords, long []string
	if j.Payload != nil {
		for _, v := range j.Payload.Variables {
			switch {
			case !v.Masked || v.Value == "":
			case len(v.Value) > clientconfig.MaxLoginPassword:
				long = append(long, v.Key)
			default:
				passwords = append(passwords, v.Value)
			}
		}
	}
	if len(long) > 0 {
		// The value itself is masked (prepare registered it); only its
		// docker login form is not derived, which would add a copy of
		// it, a third longer, per registry user to every stage's work.
		j.Log.Infof("ferry: masked variable(s) %s longer than %d KiB: masked as they are, without deriving their docker login form (base64 of user:value), as no registry password is that long", namelist.Short(long, 5), clientconfig.MaxLoginPassword>>10)
	}
	for _, k := range []string{"CI_JOB_TOKEN", "CI_REGISTRY_PASSWORD", "CI_DEPLOY_PASSWORD"} {
		if v := vars[k]; v != "" {
			passwords = append(passwords, v)
		}
	}
	users := []string{"gitlab-ci-token"}
	for _, k := range []string{"CI_REGISTRY_USER", "CI_DEPLOY_USER"} {
		if v := vars[k]; v != "" {
			users = append(users, v)
		}
	}
	s = append(s, clientconfig.LoginSecrets(users, passwords)...)
	if len(s) == 0 {
		return nil
	}
	return j.State.AddSecrets(s...)
}

// dockerVarEndpoint checks the variables of the ferry way.
func dockerVarEndpoint(j *Job, vars map[string]string, hostURL, dir string) (holder.Endpoint, error) {
	bad := func(format string, args ...any) error {
		return failure.Build(fmt.Errorf("ferry: "+format, args...))
	}
	if _, err := sshdial.ParseURL(hostURL); err != nil {
		return holder.Endpoint{}, bad("%s: %v", dockerHostVar, err)
	}
	keyVal, ok := vars[sshKeyVar]
	if !ok || strings.TrimSpace(keyVal) == "" {
		return holder.Endpoint{}, bad("%s is %s but %s is not set: give the deploy key (base64 of the PEM on one line, masked, or a File variable)", dockerHostVar, hostURL, sshKeyVar)
	}
	pem, err := sshdial.DecodeKey(keyVal)
	if err != nil {
		return holder.Endpoint{}, bad("%s %v", sshKeyVar, err)
	}
	pass, hasPass := vars[sshPassVar]
	if _, err := sshdial.ParseKey(pem, []byte(pass), hasPass); err != nil {
		if kp, ok := err.(*sshdial.KeyProblem); ok && kp.NeedsPassphrase {
			return holder.Endpoint{}, bad("%s %v: set %s (masked)", sshKeyVar, err, sshPassVar)
		}
		return holder.Endpoint{}, bad("%s %v", sshKeyVar, err)
	}
	if p := j.Env.Getenv("CUSTOM_ENV_CI_PROJECT_DIR"); p != "" && j.Payload != nil {
		if v, ok := j.Payload.Variable(sshKeyVar); ok && v.File {
			// The runner writes a File variable to <CI_PROJECT_DIR>.tmp/<KEY>
			// and removes it only in cleanup_file_variables.
			if err := j.State.AddCleanupPath(filepath.Join(filepath.Clean(p)+".tmp", sshKeyVar)); err != nil {
				return holder.Endpoint{}, err
			}
		}
	}
	ep := holder.Endpoint{Socket: filepath.Join(dir, "docker.sock"), URL: hostURL, KeyPEM: pem,
		Passphrase: pass, HasPassphrase: hasPass, Preflight: true,
		Names: sshdial.Names{Host: dockerHostVar, Key: sshKeyVar, KnownHosts: sshKnownHostVar}}
	known := vars[sshKnownHostVar]
	if strings.TrimSpace(known) == "" {
		if !dockerFlags.AllowTOFU {
			return holder.Endpoint{}, bad("%s is not set: give the known_hosts line(s) of %s (ssh-keyscan, checked out of band); the runner does not trust unknown host keys", sshKnownHostVar, hostURL)
		}
		j.Log.Warnf("ferry: %s is not set: trusting the host key %s offers (--docker-allow-tofu)", sshKnownHostVar, hostURL)
	}
	kh := filepath.Join(dir, holder.KnownHosts)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return holder.Endpoint{}, err
	}
	if err := os.WriteFile(kh, []byte(strings.TrimSpace(known)+"\n"), 0o600); err != nil {
		return holder.Endpoint{}, err
	}
	ep.KnownHostsFiles = []string{kh}
	ep.TrustOnFirstUse = strings.TrimSpace(known) == ""
	return ep, nil
}

// The stages after which something the holder saw may be waiting for the
// job log (refused peers, guard warnings): printed before the next one.
func dockerRunsBefore(stage string) bool {
	switch stage {
	case "prepare_script", "get_sources", "restore_cache", "download_artifacts":
		return false
	}
	return true
}

// dockerBeforeStage prints the holder's new notices and adds the secrets it
// captured from docker login to the job's secrets.
func dockerBeforeStage(_ context.Context, j *Job, _ string) error {
	dir := j.State.Path(dockerDirName)
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	if b, err := os.ReadFile(filepath.Join(dir, holder.CapturedFile)); err == nil {
		var s []string
		for _, l := range strings.Split(string(b), "\n") {
			if v, err := strconv.Unquote(l); err == nil && v != "" {
				s = append(s, v)
			}
		}
		if err := j.State.AddSecrets(s...); err != nil {
			return err
		}
	}
	return printNotices(j, dir)
}

// dockerDuringStage relays the holder's notices to the job log while the
// script runs: a deploy waiting for its lock says so while it waits, not
// after the stage. A poll of one small file: the holder runs outside the
// job's sandbox and writes it rarely.
func dockerDuringStage(_ context.Context, j *Job, _ string) func() {
	dir := j.State.Path(dockerDirName)
	if _, err := os.Stat(filepath.Join(dir, holder.PIDFile)); err != nil {
		return nil
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				printNotices(j, dir)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		printNotices(j, dir)
	}
}

// printNotices prints the holder's notices not printed yet (the offset in
// notices.printed, shared by the stages of the job).
func printNotices(j *Job, dir string) error {
	f, err := os.Open(filepath.Join(dir, holder.NoticesFile))
	if err != nil {
		return nil
	}
	defer f.Close()
	offFile := filepath.Join(dir, "notices.printed")
	off := int64(0)
	if b, err := os.ReadFile(offFile); err == nil {
		off, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if _, err := f.Seek(off, 0); err != nil {
		return nil
	}
	// Whole lines only: the holder may be writing one.
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	n := off + int64(len(b))
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l = strings.TrimSuffix(l, "\n"); l != "" {
			j.Log.Warnf("%s", l)
		}
	}
	if n != off {
		return os.WriteFile(offFile, []byte(strconv.FormatInt(n, 10)), 0o600)
	}
	return nil
}
