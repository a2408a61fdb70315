package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// runnerConfig is the part of gitlab-runner's config.toml check reads. It
// has no field for tokens or URLs, so they are never decoded, held or
// printed. The TOML library is github.com/pelletier/go-toml/v2: TOML 1.0, no
// dependencies, and no work at package init (ferry links it into the binary
// every stage starts; github.com/BurntSushi/toml, which gitlab-runner uses,
// loads the local time zone at init, ~0.3 ms per process).
type runnerConfig struct {
	Runners []runnerEntry `toml:"runners"`
}

type runnerEntry struct {
	Name      string        `toml:"name"`
	Executor  string        `toml:"executor"`
	URL       string        `toml:"url"` // compared with --server-url, never printed (it may hold credentials)
	BuildsDir string        `toml:"builds_dir"`
	Custom    *customConfig `toml:"custom"`
}

// customConfig is [runners.custom]; timeouts are seconds, nil when unset.
type customConfig struct {
	ConfigExec          string   `toml:"config_exec"`
	ConfigArgs          []string `toml:"config_args"`
	ConfigExecTimeout   *int64   `toml:"config_exec_timeout"`
	PrepareExec         string   `toml:"prepare_exec"`
	PrepareArgs         []string `toml:"prepare_args"`
	PrepareExecTimeout  *int64   `toml:"prepare_exec_timeout"`
	RunExec             string   `toml:"run_exec"`
	RunArgs             []string `toml:"run_args"`
	CleanupExec         string   `toml:"cleanup_exec"`
	CleanupArgs         []string `toml:"cleanup_args"`
	CleanupExecTimeout  *int64   `toml:"cleanup_exec_timeout"`
	GracefulKillTimeout *int64   `toml:"graceful_kill_timeout"`
	ForceKillTimeout    *int64   `toml:"force_kill_timeout"`
}

// runnerCheck is what the state dir checks need of a checked runner.
type runnerCheck struct {
	name                string
	stateDir, buildsDir string
}

var stageNames = [4]string{"config", "prepare", "run", "cleanup"}

func (cc *customConfig) stage(i int) (exec string, args []string, timeout *int64) {
	switch i {
	case 0:
		return cc.ConfigExec, cc.ConfigArgs, cc.ConfigExecTimeout
	case 1:
		return cc.PrepareExec, cc.PrepareArgs, cc.PrepareExecTimeout
	case 2:
		return cc.RunExec, cc.RunArgs, nil
	default:
		return cc.CleanupExec, cc.CleanupArgs, cc.CleanupExecTimeout
	}
}

// config checks config.toml itself and every runner whose custom executor
// is ferry.
func (c *checker) config(path string, raw []byte) []runnerCheck {
	const subject = "config"
	if fi, err := os.Stat(path); err == nil {
		perm := fi.Mode().Perm()
		if perm&0o004 != 0 {
			c.r.Fail(subject, "%s is readable by everyone (mode %04o): it holds the runners' tokens (chmod 0600)", path, perm)
		} else {
			c.r.OK(subject, "%s: owner %s, mode %04o", path, userName(owner(fi)), perm)
		}
	}
	var cfg runnerConfig
	if err := toml.Unmarshal(raw, &cfg); err != nil {
		// DecodeError's String() quotes the lines around the error (a
		// token, maybe); its position and message are what the admin
		// needs, and the redactor holds the file's token values anyway.
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			c.r.Fail(subject, "%s:%d:%d: not valid TOML (gitlab-runner cannot read it either): %v", path, row, col, de)
		} else {
			c.r.Fail(subject, "%s: %v", path, err)
		}
		return nil
	}
	if len(cfg.Runners) == 0 {
		c.r.Warn(subject, "%s has no [[runners]]", path)
		return nil
	}
	var checked []runnerCheck
	for i, rn := range cfg.Runners {
		name := rn.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		subj := fmt.Sprintf("runner %q", name)
		if rn.Executor != "custom" || rn.Custom == nil || !c.usesFerry(rn.Custom) {
			exe := rn.Executor
			if exe == "" {
				exe = "none"
			}
			c.r.OK(subj, "executor %s, not ferry: not checked", exe)
			continue
		}
		if rc, ok := c.runner(subj, name, rn); ok {
			checked = append(checked, rc)
		}
	}
	if len(checked) == 0 {
		c.r.Warn(subject, "no runner in %s uses ferry as its custom executor", path)
	}
	return checked
}

// usesFerry: some *_exec is a ferry binary (by name, or this very file).
func (c *checker) usesFerry(cc *customConfig) bool {
	for i := range stageNames {
		if e, _, _ := cc.stage(i); isFerry(e) {
			return true
		}
	}
	return false
}

func isFerry(p string) bool {
	if p == "" {
		return false
	}
	if b := filepath.Base(p); b == "ferry" || b == "ferry-engine" {
		return true
	}
	self, err := os.Executable()
	if err != nil {
		return false
	}
	a, err1 := os.Stat(self)
	b, err2 := os.Stat(p)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// runner checks one ferry runner. It returns the state dir and builds dir
// the stages agree on (ok false when they do not).
func (c *checker) runner(subj, name string, rn runnerEntry) (runnerCheck, bool) {
	cc := rn.Custom
	problems := c.r.problems
	rc := runnerCheck{name: name}

	// The four stages: present, the same ferry binary, the right subcommand.
	var first string
	var firstFI fs.FileInfo
	for i, sn := range stageNames {
		e, args, _ := cc.stage(i)
		if e == "" {
			c.r.Fail(subj, "%s_exec is not set: ferry needs all four stages (config, prepare, run, cleanup)", sn)
			continue
		}
		if len(args) == 0 || args[0] != sn {
			got := "nothing"
			if len(args) > 0 {
				got = fmt.Sprintf("%q", args[0])
			}
			c.r.Fail(subj, "%s_args must start with %q (the ferry subcommand), not %s", sn, sn, got)
		}
		fi, err := os.Stat(e)
		if err != nil {
			c.r.Fail(subj, "%s_exec %s: %v", sn, e, err)
			continue
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			c.r.Fail(subj, "%s_exec %s is not an executable file", sn, e)
			continue
		}
		if firstFI == nil {
			first, firstFI = e, fi
		} else if !os.SameFile(firstFI, fi) {
			c.r.Fail(subj, "%s_exec %s is not the same file as %s: the stages of one job would run different ferry builds", sn, e, first)
		}
	}
	if firstFI != nil && !sameAsSelf(firstFI) {
		c.otherFerry(subj, first)
	}

	// The flags of each stage, parsed as that stage parses them. config's
	// job_env hands its state dir to the later calls (FERRY_STATE_DIR)
	// unless their own args name one.
	if c.h.ParseArgs == nil {
		return rc, false
	}
	env := map[string]string{}
	if c.home != "" {
		env["HOME"] = c.home
	}
	var settings [4]*StageSettings
	for i, sn := range stageNames {
		_, args, _ := cc.stage(i)
		if len(args) == 0 || args[0] != sn {
			continue
		}
		s, err := c.h.ParseArgs(args, env)
		if err != nil {
			c.r.Fail(subj, "%s_args: %v", sn, err)
			continue
		}
		if len(s.UnexpectedArgs) > 0 {
			c.r.Fail(subj, "%s_args: unexpected arguments %q after the flags (ferry would refuse them)", sn, s.UnexpectedArgs)
		}
		settings[i] = &s
		if i == 0 {
			// config's job_env, as the runner passes it on.
			env["FERRY_STATE_DIR"] = s.StateDir
			if s.ServerURL != "" {
				env["FERRY_SERVER_URL"] = s.ServerURL
			}
		}
	}
	var dirs []string
	given := false
	for i, s := range settings {
		if s == nil {
			continue
		}
		given = given || s.StateDirGiven
		if len(dirs) > 0 && s.StateDir != dirs[0] {
			c.r.Fail(subj, "%s uses state dir %s, config uses %s: every stage must use the same --state-dir", stageNames[i], s.StateDir, dirs[0])
		}
		dirs = append(dirs, s.StateDir)
	}
	if len(dirs) > 0 {
		rc.stateDir = dirs[0]
		if !given {
			c.r.Warn(subj, "no --state-dir in the *_args: the stages use %s ($HOME/.ferry of %s); name it in config_args, so check and the runner agree", rc.stateDir, c.userName)
		}
	}
	if s := settings[0]; s != nil {
		rc.buildsDir = s.BuildsDir
	}

	// --server-url names the GitLab instance in job keys; it should be the
	// runner's own url. Neither is printed.
	serverSet := false
	for i, s := range settings {
		if s == nil || s.ServerURL == "" {
			continue
		}
		serverSet = true
		if strings.TrimRight(s.ServerURL, "/") != strings.TrimRight(rn.URL, "/") {
			c.r.Fail(subj, "%s's --server-url is not this runner's url (neither printed): jobs would be keyed on another instance's name", stageNames[i])
		}
	}
	if !serverSet && len(dirs) > 0 {
		c.r.Warn(subj, "no --server-url in config_args: ferry names the GitLab instance from each job's clone URL; give it this runner's url")
	}

	// Timeouts (seconds).
	run := settings[2]
	grace := 10 * time.Second
	if run != nil {
		grace = run.GracePeriod
	}
	switch g := cc.GracefulKillTimeout; {
	case g == nil:
		c.r.Fail(subj, "graceful_kill_timeout is not set (the runner's default is 10 minutes): set it a little above ferry's --grace-period (%s), e.g. %d", grace, int64(grace/time.Second)+20)
	case time.Duration(*g)*time.Second <= grace:
		c.r.Fail(subj, "graceful_kill_timeout = %d is not above run's --grace-period %s: the runner would SIGKILL ferry before ferry has ended the job's processes", *g, grace)
	}
	if f := cc.ForceKillTimeout; f != nil && *f <= 0 {
		c.r.Fail(subj, "force_kill_timeout = %d: must be positive", *f)
	}
	minimum := [4]time.Duration{5 * time.Second, 30 * time.Second, 0, 10 * time.Second}
	preflight := "the features' --*-preflight-timeout"
	if p := settings[1]; p != nil {
		if p.Preflight+10*time.Second > minimum[1] {
			minimum[1] = p.Preflight + 10*time.Second
		}
		if len(p.PreflightFlags) > 0 {
			preflight = strings.Join(p.PreflightFlags, " + ")
		}
	}
	for i, sn := range stageNames {
		_, _, t := cc.stage(i)
		if t == nil {
			continue
		}
		if d := time.Duration(*t) * time.Second; d < minimum[i] {
			why := ""
			if i == 1 {
				why = " (prepare's checks may take " + preflight + ", and the first prepare after an upgrade unpacks the engine)"
			}
			c.r.Fail(subj, "%s_exec_timeout = %d is too short: at least %d%s", sn, *t, int64(minimum[i]/time.Second), why)
		}
	}
	if c.r.problems == problems {
		c.r.OK(subj, "custom executor ferry (%s) in all four stages, state dir %s, graceful_kill_timeout %d s > --grace-period %s", first, rc.stateDir, *cc.GracefulKillTimeout, grace)
		return rc, true
	}
	return rc, rc.stateDir != ""
}

func sameAsSelf(fi fs.FileInfo) bool {
	self, err := os.Executable()
	if err != nil {
		return false
	}
	s, err := os.Stat(self)
	return err == nil && os.SameFile(s, fi)
}

// otherFerry reports the version of the ferry a runner calls when it is
// not the one running check (an old copy in /usr/local/bin after a
// package install, say).
func (c *checker) otherFerry(subj, p string) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "version").Output()
	got := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(got, "ferry ") {
		c.r.Fail(subj, "%s is not a ferry this check can ask for its version: %v %s", p, err, firstLine(got))
		return
	}
	if v := strings.TrimPrefix(got, "ferry "); v != c.h.Version {
		c.r.Warn(subj, "calls %s, which is ferry %s; this check is ferry %s (an older copy left beside the package?)", p, v, c.h.Version)
	}
}
