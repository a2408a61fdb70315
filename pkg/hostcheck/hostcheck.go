// Package hostcheck is `ferry check`: what a runner admin runs on the runner
// host after installing or upgrading ferry, as `flux check --pre` or
// `gitlab-runner verify` are run. It prints one line per fact and one per
// problem and exits non-zero when there is a problem:
//
//   - ferry's version, the engine it carries, and whether that engine
//     unpacks and runs (and reports the same version);
//   - each state dir: owner, mode, its parents, the mount (an engine cannot
//     run from a noexec file system), not inside the builds dir;
//   - the job sandbox (Landlock ABI, or why there is none);
//   - what the Docker features need (the docker CLI and its version);
//   - every [[runners]] of gitlab-runner's config.toml whose custom executor
//     is ferry: the four stages, the same state dir in each, the flags as
//     ferry parses them, the kill and exec timeouts.
//
// It never prints a token: config.toml is decoded into a struct without
// the token fields, no URL is printed, and everything goes through a
// redactor holding every token-like value found in the file.
package hostcheck

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/redact"
)

// DefaultConfig is where gitlab-runner keeps its configuration when it runs
// as a system service.
const DefaultConfig = "/etc/gitlab-runner/config.toml"

// DefaultRunnerUser is the user the gitlab-runner package's service runs
// jobs as (`gitlab-runner run --user gitlab-runner`).
const DefaultRunnerUser = "gitlab-runner"

// StageSettings is what check needs of one stage's *_args, parsed exactly as
// that ferry stage parses them.
type StageSettings struct {
	StateDir       string
	StateDirGiven  bool // --state-dir (or FERRY_STATE_DIR) was given, not the $HOME default
	BuildsDir      string
	CacheDir       string
	GracePeriod    time.Duration
	ServerURL      string        // --server-url: compared with the runner's url, never printed
	Preflight      time.Duration // the sum of the features' --*-preflight-timeout: prepare may take them all
	PreflightFlags []string      // their names
	UnexpectedArgs []string
}

// SandboxProbe reports the Landlock ABI the job sandbox would use, or why
// there is none (pkg/sandbox's Probe).
type SandboxProbe func() (abi int, err error)

// Hooks are what check needs from the rest of ferry; stages/cli.go fills
// them in (this package does not import stages).
type Hooks struct {
	// Version is ferry's version.
	Version string
	// Engine is true when check runs inside ferry-engine (which needs no
	// other engine).
	Engine bool
	// ParseArgs parses a stage's args (args[0] is the subcommand) as that
	// stage would in a runner whose process environment is env.
	ParseArgs func(args []string, env map[string]string) (StageSettings, error)
	// Sandbox is nil in a build without a job sandbox.
	Sandbox SandboxProbe
	// PrivateTmp (may be nil) tries what prepare tries for a job's private
	// /tmp (pkg/tmpns's Probe), as the runner user uid:gid when check runs
	// as root (uid -1: as check's own user): nil, or why this host cannot
	// give one.
	PrivateTmp func(uid, gid int) error
	// LocateEngine returns the engine binary for the state root, unpacking
	// the embedded one there if needed (pkg/enginebin's Locate).
	LocateEngine func(stateRoot string) (string, error)
	// InstalledEngine (may be nil) reports a package's root-owned engine
	// (enginebin.Installed): its path, and why it is not used ("" when
	// it is; path "" when there is none).
	InstalledEngine func() (path, reason string)
	// EmbeddedEngine is the size of the engine carried by this ferry (0:
	// none).
	EmbeddedEngine int
	// Getenv reads check's own environment (nil: os.LookupEnv).
	Getenv func(string) (string, bool)
}

// Report collects the lines.
type Report struct {
	w                  io.Writer
	problems, warnings int
}

func (r *Report) line(tag, subject, format string, a ...any) {
	fmt.Fprintf(r.w, "%-4s  %s: %s\n", tag, subject, fmt.Sprintf(format, a...))
}

// OK prints a fact.
func (r *Report) OK(subject, format string, a ...any) { r.line("ok", subject, format, a...) }

// Warn prints something that works but limits a feature or deserves a
// look; it does not fail the check.
func (r *Report) Warn(subject, format string, a ...any) {
	r.warnings++
	r.line("warn", subject, format, a...)
}

// Fail prints a problem; check exits 1.
func (r *Report) Fail(subject, format string, a ...any) {
	r.problems++
	r.line("FAIL", subject, format, a...)
}

const usage = `Usage: ferry check [--config PATH] [--user NAME] [--state-dir DIR] [--builds-dir DIR]

Checks this runner host for ferry, one line per fact ("ok"), limitation
("warn") and problem ("FAIL"); exits 1 when there is a problem. Run it as
root or as the runner's user after installing or upgrading ferry.

  --config PATH    gitlab-runner's config.toml (default %s when it
                   exists): every [[runners]] whose custom executor is ferry
                   is checked, and the state dirs of their *_args
  --user NAME      the user gitlab-runner runs jobs as (default %s
                   when that user exists, else the current user)
  --state-dir DIR  a state dir to check when there is no config.toml
  --builds-dir DIR the builds root that goes with --state-dir
`

// Main runs `ferry check args...` and returns the exit code.
func Main(args []string, stdout, stderr io.Writer, h Hooks) int {
	fs := flag.NewFlagSet("ferry check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "")
	userName := fs.String("user", "", "")
	stateDir := fs.String("state-dir", "", "")
	buildsDir := fs.String("builds-dir", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, usage, DefaultConfig, DefaultRunnerUser)
			return 0
		}
		fmt.Fprintf(stderr, "ferry check: %v (try: ferry check --help)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ferry check: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if h.Getenv == nil {
		h.Getenv = os.LookupEnv
	}
	explicitConfig := *configPath != ""
	if !explicitConfig {
		if _, err := os.Stat(DefaultConfig); err == nil {
			*configPath = DefaultConfig
		}
	}

	// Everything printed goes through a redactor holding every token-like
	// value of config.toml, read before anything is printed.
	var raw []byte
	var readErr error
	if *configPath != "" {
		raw, readErr = os.ReadFile(*configPath)
	}
	out := redact.NewWriter(stdout, redact.AllVariants(secretValues(raw)...))
	defer out.Close()
	r := &Report{w: out}

	c := &checker{r: r, h: h}
	c.runnerUser(*userName)
	c.ferry()

	var runners []runnerCheck
	switch {
	case *configPath == "":
		r.OK("config", "no %s here and no --config: runners not checked", DefaultConfig)
	case readErr != nil:
		r.Fail("config", "%v", readErr)
	default:
		runners = c.config(*configPath, raw)
	}

	// The state dirs: the runners' (each once), else --state-dir, else the
	// runner user's default.
	type dirUse struct {
		builds []string
		names  []string
	}
	dirs := map[string]*dirUse{}
	var order []string
	add := func(dir, builds, name string) {
		u := dirs[dir]
		if u == nil {
			u = &dirUse{}
			dirs[dir] = u
			order = append(order, dir)
		}
		u.builds = append(u.builds, builds)
		if name != "" {
			u.names = append(u.names, name)
		}
	}
	for _, rc := range runners {
		if rc.stateDir != "" {
			add(rc.stateDir, rc.buildsDir, rc.name)
		}
	}
	if len(order) == 0 {
		dir, builds := *stateDir, *buildsDir
		if dir == "" && c.home != "" {
			dir = filepath.Join(c.home, ".ferry")
		}
		if builds == "" && c.home != "" {
			builds = filepath.Join(c.home, "builds")
		}
		if dir == "" {
			r.Fail("state dir", "no --state-dir and no home directory for user %s", c.userName)
		} else {
			add(dir, builds, "")
		}
	}
	engineRoot := ""
	for i, dir := range order {
		subject := "state dir " + dir
		if names := dirs[dir].names; len(names) > 0 {
			subject += " (runner " + strings.Join(quoteAll(names), ", ") + ")"
		}
		// The engine is tried in the first state dir, unless that dir
		// has a problem (never unpack into a dir inside a builds dir).
		// A state dir that does not exist yet is left for the first
		// prepare to create.
		if c.stateDir(subject, dir, dirs[dir].builds) && i == 0 {
			if _, err := os.Stat(dir); err == nil {
				engineRoot = dir
			}
		}
		c.homes(subject, dir)
	}
	c.engine(engineRoot)
	c.sandbox()
	c.docker()

	summary := fmt.Sprintf("%d problem(s), %d warning(s)", r.problems, r.warnings)
	if r.problems > 0 {
		fmt.Fprintf(out, "ferry check: %s\n", summary)
		return 1
	}
	fmt.Fprintf(out, "ferry check: passed, %s\n", summary)
	return 0
}

// checker holds what the checks share.
type checker struct {
	r        *Report
	h        Hooks
	uid      int // the runner user's uid (-1: unknown)
	gid      int // its primary group
	userName string
	home     string
}

// runnerUser settles who runs the jobs: --user, else gitlab-runner when
// that user exists, else whoever runs check.
func (c *checker) runnerUser(name string) {
	c.uid = -1
	var u account
	var err error
	switch {
	case name != "":
		u, err = lookupAccount(name)
		if err != nil {
			c.r.Fail("user", "--user %s: %v", name, err)
			return
		}
	default:
		if u, err = lookupAccount(DefaultRunnerUser); err != nil {
			u, err = currentAccount()
		}
		if err != nil {
			c.r.Fail("user", "cannot tell the runner's user (give --user): %v", err)
			return
		}
	}
	c.userName, c.home = u.Username, u.HomeDir
	c.uid, _ = strconv.Atoi(u.Uid)
	c.gid, _ = strconv.Atoi(u.Gid)
	how := "jobs run as this user (--user)"
	switch {
	case name == "" && u.Username == DefaultRunnerUser:
		how = "the gitlab-runner package's service runs jobs as this user (else give --user)"
	case name == "":
		how = "no gitlab-runner user here: assuming jobs run as the current user (else give --user)"
	}
	c.r.OK("user", "%s (uid %s, home %s): %s", u.Username, u.Uid, u.HomeDir, how)
}

func (c *checker) ferry() {
	self, err := os.Executable()
	if err == nil {
		self, _ = filepath.EvalSymlinks(self)
	}
	what := "ferry"
	if c.h.Engine {
		what = "ferry-engine"
	}
	c.r.OK("ferry", "%s %s (%s/%s, %s) at %s", what, c.h.Version, runtime.GOOS, runtime.GOARCH, runtime.Version(), self)
}

func quoteAll(ss []string) []string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return q
}

// secretValues returns the values of config.toml keys that hold
// credentials (token, *_token, password, secret, key...), found line by
// line so that even a file the TOML parser refuses yields them.
func secretValues(raw []byte) []string {
	var vals []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.Trim(strings.TrimSpace(k), `"'`))
		if !isSecretKey(k) {
			continue
		}
		v = strings.TrimSpace(v)
		if i := strings.IndexAny(v, `"'`); i >= 0 {
			q := v[i]
			rest := v[i+1:]
			if j := strings.IndexByte(rest, q); j >= 0 {
				rest = rest[:j]
			}
			v = rest
		}
		if len(v) >= 4 {
			vals = append(vals, v)
		}
	}
	return vals
}

func isSecretKey(k string) bool {
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		k = k[i+1:]
	}
	for _, w := range []string{"token", "password", "secret", "key", "credential"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}
