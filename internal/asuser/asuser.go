// Package asuser runs the body of a test as an unprivileged Unix user, the
// way a gitlab-runner service runs jobs. Root ignores file permissions, so
// an isolation test that ran as root would prove nothing: when the test
// process is root, Run creates the user (useradd, once per name), copies the
// test binary and the files the body needs into a directory that user can
// read (with the runner-faithful driver's gitlab-runner shim, built here:
// the user may not be able to enter the checkout at all), and runs the test
// again in a child process under that uid/gid with
// -test.run naming only this test. In the child, Run calls the body
// directly; so it does when the test process is not root to begin with.
//
// A TestMain must not do its expensive setup (building ferry, starting a
// cluster) in the child: it checks IsChild first.
package asuser

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/proctest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

const (
	childVar  = "FERRY_ASUSER_TEST" // the test the child runs
	filePfx   = "FERRY_ASUSER_FILE_"
	valuePfx  = "FERRY_ASUSER_VALUE_"
	childWait = 15 * time.Minute
)

// Spec is what the body needs from the parent.
type Spec struct {
	// User is the Unix user to run as (created when missing), e.g. "ferry-ident-1".
	User string
	// Files are copied (mode 0755) to a directory the user can read; the
	// body finds them under the same keys in Env.Files.
	Files map[string]string
	// Values are passed as they are (Env.Values): credentials made by the
	// parent, for instance.
	Values map[string]string
}

// Env is what the body gets.
type Env struct {
	Files  map[string]string
	Values map[string]string
	// Uid is the uid the body runs as.
	Uid int
}

// IsChild reports whether this process is a child started by Run.
func IsChild() bool { return os.Getenv(childVar) != "" }

var keyRe = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// Run runs body as spec.User (see the package comment). t must be a
// top-level test.
func Run(t *testing.T, spec Spec, body func(t *testing.T, env Env)) {
	t.Helper()
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("asuser.Run: %s is a subtest; call it from a top-level test", t.Name())
	}
	for k := range spec.Files {
		if !keyRe.MatchString(k) {
			t.Fatalf("asuser.Run: file key %q", k)
		}
	}
	for k := range spec.Values {
		if !keyRe.MatchString(k) {
			t.Fatalf("asuser.Run: value key %q", k)
		}
	}
	if name := os.Getenv(childVar); name != "" {
		if name != t.Name() {
			t.Skipf("asuser child for %s", name) // never reached: -test.run selects only that test
		}
		body(t, childEnv())
		return
	}
	if os.Geteuid() != 0 {
		// Already unprivileged: the body runs here, on the files as they are.
		body(t, Env{Files: spec.Files, Values: spec.Values, Uid: os.Geteuid()})
		return
	}
	uid, gid := ensureUser(t, spec.User)
	dir := shareDir(t, uid)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "test.bin")
	proctest.CopyExecutable(t, exe, bin)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"TMPDIR=" + os.TempDir(),
		"LANG=C.UTF-8",
		childVar + "=" + t.Name(),
	}
	// The runner-faithful driver's gitlab-runner shim, built here, where the
	// checkout and the Go build cache are at hand: the child may not be able
	// to enter the checkout at all (a clone in root's 0700 home).
	shim, err := runnerdriver.BuildShim()
	if err != nil {
		t.Fatal(err)
	}
	shimCopy := filepath.Join(dir, "glshim")
	proctest.CopyExecutable(t, shim, shimCopy)
	env = append(env, runnerdriver.ShimVar+"="+shimCopy)
	for k, p := range spec.Files {
		dst := filepath.Join(dir, "f-"+k)
		proctest.CopyExecutable(t, p, dst)
		env = append(env, filePfx+k+"="+dst)
	}
	for k, v := range spec.Values {
		env = append(env, valuePfx+k+"="+v)
	}
	cmd := exec.Command(bin, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1",
		"-test.timeout="+childWait.String())
	cmd.Env = env
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err = cmd.Run()
	t.Logf("as user %s (uid %d) in %s:\n%s", spec.User, uid, time.Since(start).Round(time.Millisecond), indent(out.String()))
	if err != nil {
		t.Fatalf("the test body failed as user %s: %v", spec.User, err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+t.Name()) {
		t.Fatalf("the child did not run %s as user %s", t.Name(), spec.User)
	}
}

func childEnv() Env {
	e := Env{Files: map[string]string{}, Values: map[string]string{}, Uid: os.Geteuid()}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if n, ok := strings.CutPrefix(k, filePfx); ok {
			e.Files[n] = v
		} else if n, ok := strings.CutPrefix(k, valuePfx); ok {
			e.Values[n] = v
		}
	}
	return e
}

var userMu sync.Mutex

// ensureUser creates the user (no home, bash) unless it exists, and returns
// its uid and gid.
func ensureUser(t *testing.T, name string) (int, int) {
	t.Helper()
	userMu.Lock()
	defer userMu.Unlock()
	u, err := user.Lookup(name)
	if err != nil {
		out, err := exec.Command("useradd", "--no-create-home", "--shell", "/bin/bash", "--user-group", name).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "already exists") {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			t.Fatalf("user %s: %v", name, err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		t.Fatalf("user %s is root", name)
	}
	return uid, gid
}

// shareDir is a directory owned by the user (its HOME in the child) whose
// parent everyone can traverse; removed at the end of the test.
func shareDir(t *testing.T, uid int) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "ferry-asuser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "home")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, -1); err != nil {
		t.Fatal(err)
	}
	return dir
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// User creates the test user name (no home, bash) unless it exists, and
// returns its uid and gid, for a root test that starts processes as it
// itself. Needs root.
func User(t *testing.T, name string) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("asuser.User: needs root (CI runs the tests as root)")
	}
	return ensureUser(t, name)
}
