package hostcheck_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/hostcheck"
	"gitlab.com/ferry-ci/ferry/stages"
)

// Planted in config.toml where gitlab-runner keeps credentials: none may
// appear in check's output, in any encoding.
var planted = []string{
	"glrt-PLANTEDrunnertoken0001",
	"glrt-PLANTEDrunnertoken0002",
	"PLANTEDs3secretKEY0003",
	"PLANTEDurlpassword0004",
}

// host is a fake runner host in a temp dir: a ferry "binary" (a script
// that answers `version` like ferry), a state dir, a builds dir.
type host struct {
	dir, ferry, state, builds string
	user                      string
	// installed, when set, is a package's engine: its reason "" makes
	// the located engine that one.
	installed func() (string, string)
	// sandbox and privateTmp, when set, are the kernel probes.
	sandbox    hostcheck.SandboxProbe
	privateTmp func(uid, gid int) error
}

func newHost(t *testing.T) *host {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// t.TempDir's parents are the test's own (0700, ours): the checks of
	// the dirs above the state dir look at real ones.
	h := &host{dir: dir, ferry: filepath.Join(dir, "bin", "ferry"), state: filepath.Join(dir, "state"), builds: filepath.Join(dir, "builds"), user: u.Username}
	for _, d := range []string{filepath.Dir(h.ferry), h.state, h.builds} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(h.ferry, []byte("#!/bin/sh\necho ferry test\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

// runner is one [[runners]] block with ferry; mutate edits its lines.
func (h *host) runner(name string, mutate func(lines map[string]string)) string {
	lines := map[string]string{
		"config":  fmt.Sprintf(`config_exec = %q`+"\n    config_args = [\"config\", \"--state-dir=%s\", \"--builds-dir=%s\", \"--server-url=https://ci:%s@gitlab.example.com/\"]", h.ferry, h.state, h.builds, planted[3]),
		"prepare": fmt.Sprintf(`prepare_exec = %q`+"\n    prepare_args = [\"prepare\", \"--state-dir=%s\"]", h.ferry, h.state),
		"run":     fmt.Sprintf(`run_exec = %q`+"\n    run_args = [\"run\", \"--state-dir=%s\", \"--grace-period=10s\"]", h.ferry, h.state),
		"cleanup": fmt.Sprintf(`cleanup_exec = %q`+"\n    cleanup_args = [\"cleanup\", \"--state-dir=%s\"]", h.ferry, h.state),
		"kill":    "graceful_kill_timeout = 30\n    force_kill_timeout = 10",
		"timeout": "prepare_exec_timeout = 120",
	}
	if mutate != nil {
		mutate(lines)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[[runners]]\n  name = %q\n  url = \"https://ci:%s@gitlab.example.com\"\n  token = %q\n  executor = \"custom\"\n  [runners.custom]\n", name, planted[3], planted[0])
	for _, k := range []string{"config", "prepare", "run", "cleanup", "kill", "timeout"} {
		if lines[k] != "" {
			b.WriteString("    " + lines[k] + "\n")
		}
	}
	return b.String()
}

func (h *host) check(t *testing.T, config string, extra ...string) (string, int) {
	t.Helper()
	path := filepath.Join(h.dir, "config.toml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	engine := filepath.Join(h.dir, "ferry-engine")
	if err := os.WriteFile(engine, []byte("#!/bin/sh\necho ferry test\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if h.installed != nil {
		if p, reason := h.installed(); reason == "" {
			if err := os.WriteFile(p, []byte("#!/bin/sh\necho ferry test\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			engine = p
		}
	}
	var out, errOut bytes.Buffer
	args := append([]string{"--config", path, "--user", h.user}, extra...)
	code := hostcheck.Main(args, &out, &errOut, hostcheck.Hooks{
		Version:         "test",
		ParseArgs:       stages.CheckStageArgs,
		LocateEngine:    func(string) (string, error) { return engine, nil },
		InstalledEngine: h.installed,
		Sandbox:         h.sandbox,
		PrivateTmp:      h.privateTmp,
		Getenv:          func(string) (string, bool) { return "", false },
	})
	all := out.String() + errOut.String()
	for _, p := range planted {
		for _, enc := range []string{p, base64.StdEncoding.EncodeToString([]byte(p)), base64.RawURLEncoding.EncodeToString([]byte(p))} {
			if strings.Contains(all, enc) {
				t.Errorf("check printed a planted secret (%s):\n%s", p, all)
			}
		}
	}
	return all, code
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, w) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no line says %q:\n%s", w, out)
		}
	}
}

// check says whether jobs get a private /tmp on this host, and why not (a
// warning: jobs still run, with /tmp refused), only where the sandbox is
// available at all.
func TestCheckPrivateTmp(t *testing.T) {
	h := newHost(t)
	cfg := h.runner("ferry-good", nil)
	h.sandbox = func() (int, error) { return 7, nil }
	h.privateTmp = func(int, int) error { return nil }
	out, code := h.check(t, cfg)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	wantLines(t, out, "ok    private /tmp: available: each job gets its own /tmp and /var/tmp")

	why := "the kernel refused: kernel.apparmor_restrict_unprivileged_userns=1 (Ubuntu 23.10+) denies capabilities"
	h.privateTmp = func(int, int) error { return errors.New(why + "\nsecond line") }
	out, code = h.check(t, cfg)
	if code != 0 {
		t.Fatalf("a missing private /tmp is a warning, not a problem: exit %d:\n%s", code, out)
	}
	wantLines(t, out, "warn  private /tmp: not available, jobs run with /tmp and /var/tmp refused and use $TMPDIR: "+why)
	if strings.Contains(out, "second line") {
		t.Errorf("the reason is not one line:\n%s", out)
	}

	h.sandbox = func() (int, error) { return 1, errors.New("older than ABI 2") }
	h.privateTmp = func(int, int) error { t.Error("private /tmp probed without a sandbox"); return nil }
	out, _ = h.check(t, cfg)
	if strings.Contains(out, "private /tmp") {
		t.Errorf("a private /tmp line without a sandbox:\n%s", out)
	}
}

// Installed from the .deb, check says the engine runs in place; a package
// engine ferry does not trust is a warning naming why.
func TestCheckInstalledEngine(t *testing.T) {
	h := newHost(t)
	lib := filepath.Join(h.dir, "lib-ferry-engine-0123456789abcdef")
	h.installed = func() (string, string) { return lib, "" }
	out, code := h.check(t, h.runner("ferry-pkg", nil))
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	wantLines(t, out, "ok    engine: installed, root-owned: nothing to unpack or compare; "+lib+" reports ferry test")
	h.installed = func() (string, string) { return lib, lib + " is owned by uid 998, not root" }
	out, _ = h.check(t, h.runner("ferry-pkg", nil))
	wantLines(t, out, "warn  engine: not using the installed engine "+lib+": "+lib+" is owned by uid 998, not root; jobs unpack the embedded one into the state dir",
		"ok    engine: unpacks into the state dir "+h.state)
}

func TestCheckGoodRunner(t *testing.T) {
	h := newHost(t)
	cfg := "concurrent = 4\n" + h.runner("ferry-good", nil) +
		"  [runners.cache]\n    [runners.cache.s3]\n      AccessKey = \"x\"\n      SecretKey = \"" + planted[2] + "\"\n" +
		"[[runners]]\n  name = \"plain-shell\"\n  token = \"" + planted[1] + "\"\n  executor = \"shell\"\n"
	// Two projects' homes, 300 kB and 200 kB of cache.
	for i, n := range []int{300_000, 200_000} {
		d := filepath.Join(h.state, "homes", fmt.Sprintf("abcd1234-%d", i+1), ".cache")
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "blob"), bytes.Repeat([]byte("x"), n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, code := h.check(t, cfg)
	if code != 0 {
		t.Fatalf("exit %d for a good runner:\n%s", code, out)
	}
	wantLines(t, out,
		`ok    runner "ferry-good": custom executor ferry (`+h.ferry+`) in all four stages, state dir `+h.state,
		`ok    runner "plain-shell": executor shell, not ferry: not checked`,
		`ok    state dir `+h.state+` (runner "ferry-good"): owner`,
		`ok    engine: unpacks into the state dir `+h.state,
		`ok    state dir `+h.state+` (runner "ferry-good"): 2 project home(s) in `+filepath.Join(h.state, "homes")+`, 0.5 MB on disk`,
		"ferry check: passed")
	if strings.Contains(out, "FAIL") || strings.Contains(out, "server-url") {
		t.Errorf("a FAIL or --server-url line for a good setup:\n%s", out)
	}
}

func TestCheckRunnerProblems(t *testing.T) {
	h := newHost(t)
	other := filepath.Join(h.dir, "other-state")
	cases := []struct {
		name   string
		mutate func(map[string]string)
		want   string
	}{
		{"no-cleanup", func(l map[string]string) { l["cleanup"] = "" }, "cleanup_exec is not set"},
		{"split-state", func(l map[string]string) {
			l["run"] = fmt.Sprintf(`run_exec = %q`+"\n    run_args = [\"run\", \"--state-dir=%s\"]", h.ferry, other)
		}, "run uses state dir " + other + ", config uses " + h.state},
		{"no-graceful", func(l map[string]string) { l["kill"] = "" }, "graceful_kill_timeout is not set"},
		{"short-graceful", func(l map[string]string) { l["kill"] = "graceful_kill_timeout = 5" }, "graceful_kill_timeout = 5 is not above run's --grace-period 10s"},
		{"short-prepare", func(l map[string]string) { l["timeout"] = "prepare_exec_timeout = 5" }, "prepare_exec_timeout = 5 is too short: at least 30"},
		{"typo-flag", func(l map[string]string) {
			l["prepare"] = fmt.Sprintf(`prepare_exec = %q`+"\n    prepare_args = [\"prepare\", \"--stat-dir=%s\"]", h.ferry, h.state)
		}, "prepare_args: ferry prepare: flag provided but not defined: -stat-dir"},
		{"wrong-sub", func(l map[string]string) {
			l["cleanup"] = fmt.Sprintf(`cleanup_exec = %q`+"\n    cleanup_args = [\"--state-dir=%s\"]", h.ferry, h.state)
		}, `cleanup_args must start with "cleanup"`},
		{"other-server", func(l map[string]string) {
			l["config"] = fmt.Sprintf(`config_exec = %q`+"\n    config_args = [\"config\", \"--state-dir=%s\", \"--server-url=https://other.example.com\"]", h.ferry, h.state)
		}, "config's --server-url is not this runner's url (neither printed)"},
		{"missing-binary", func(l map[string]string) {
			l["run"] = fmt.Sprintf(`run_exec = %q`+"\n    run_args = [\"run\", \"--state-dir=%s\"]", filepath.Join(h.dir, "nowhere", "ferry"), h.state)
		}, "run_exec " + filepath.Join(h.dir, "nowhere", "ferry") + ": stat"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := h.check(t, h.runner(c.name, c.mutate))
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			wantLines(t, out, fmt.Sprintf("FAIL  runner %q: %s", c.name, c.want))
		})
	}
}

func TestCheckStateDirProblems(t *testing.T) {
	t.Run("inside-builds", func(t *testing.T) {
		h := newHost(t)
		h.state = filepath.Join(h.builds, ".ferry")
		out, code := h.check(t, h.runner("r", nil))
		if code != 1 {
			t.Errorf("exit %d", code)
		}
		wantLines(t, out, "FAIL  state dir "+h.state+` (runner "r"): inside the builds dir `+h.builds)
	})
	t.Run("group-writable", func(t *testing.T) {
		h := newHost(t)
		os.Chmod(h.state, 0o770)
		out, code := h.check(t, h.runner("r", nil))
		if code != 1 {
			t.Errorf("exit %d", code)
		}
		wantLines(t, out, "FAIL  state dir "+h.state+` (runner "r"): mode 0770: group or others can write it`)
	})
	t.Run("symlink", func(t *testing.T) {
		h := newHost(t)
		real := h.state
		h.state = filepath.Join(h.dir, "link")
		if err := os.Symlink(real, h.state); err != nil {
			t.Fatal(err)
		}
		out, _ := h.check(t, h.runner("r", nil))
		wantLines(t, out, "FAIL  state dir "+h.state+` (runner "r"): is a symlink`)
	})
	t.Run("world-readable-config", func(t *testing.T) {
		h := newHost(t)
		path := filepath.Join(h.dir, "config.toml")
		if err := os.WriteFile(path, []byte(h.runner("r", nil)), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		hostcheck.Main([]string{"--config", path, "--user", h.user}, &out, &errOut, hostcheck.Hooks{Version: "test", ParseArgs: stages.CheckStageArgs})
		wantLines(t, out.String(), "FAIL  config: "+path+" is readable by everyone (mode 0644)")
		for _, p := range planted {
			if strings.Contains(out.String()+errOut.String(), p) {
				t.Errorf("planted secret printed")
			}
		}
	})
}

// A config.toml gitlab-runner cannot parse is reported with its line; the
// token on the broken line is not printed.
func TestCheckBrokenConfigPrintsNoToken(t *testing.T) {
	h := newHost(t)
	cfg := "[[runners]]\n  name = \"r\"\n  token = \"" + planted[0] + "\" oops\n  executor = \"custom\"\n"
	out, code := h.check(t, cfg)
	if code != 1 {
		t.Errorf("exit %d", code)
	}
	wantLines(t, out, "FAIL  config: "+filepath.Join(h.dir, "config.toml")+":3:")
}
