package stages_test

// End-to-end attack tests of issue 11's items 4 and 5, through the
// runner-faithful driver, with the driver (the "runner") and every job
// running as an unprivileged user, as a gitlab-runner service would: root
// ignores file permissions. The test process (root in CI) creates the user,
// copies the binaries where that user can run them, and re-runs this test
// binary as the user in a helper role (TestHelperProcessIsolation).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/proctest"
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"gitlab.com/ferry-ci/ferry/pkg/sandbox"
)

const isoUser = "ferry-sandbox-1"

// isoBase is where the isolation tests make the runner user's files.
const isoBase = "/var/lib"

// Secrets the attacker must never see.
const (
	secretABuild = "A-BUILD-SECRET-7f3a"
	secretAEnv   = "A-ENV-SECRET-9c1b"
	secretAKube  = "A-KUBECONFIG-SECRET-5d2c"
	secretHome   = "RUNNER-HOME-SECRET-e41d"
)

// runnerHomeSecrets are planted in the runner user's home (relative paths).
var runnerHomeSecrets = []string{
	".ssh/id_ed25519", ".docker/config.json", ".kube/config", ".gnupg/private-keys-v1.d/k.key",
	".netrc", ".git-credentials", ".aws/credentials", ".config/gcloud/credentials.db",
	".gitlab-runner/config.toml",
}

// isoSetup is what the root test prepares for the unprivileged runner.
type isoSetup struct {
	uid, gid int
	dir      string // binaries, 0755
	home     string // the runner user's HOME for this test (0700, the user's)
	rv       string // rendezvous dir the jobs may write (--sandbox-writable)
	// privateTmp is the --private-tmp mode the jobs run with.
	privateTmp string
}

// privateTmpModes are the sandbox's modes every isolation test runs in: a
// private /tmp (where the kernel allows one: it does on CI's) entered
// through the job's namespace holder, the same made by a re-exec of ferry
// on every stage (the path without a holder), and the fallback without,
// forced.
var privateTmpModes = []string{"auto", "reexec", "off"}

// forEachTmpMode runs test once per mode, as subtests.
func forEachTmpMode(t *testing.T, test func(t *testing.T, mode string)) {
	for _, m := range privateTmpModes {
		t.Run("private-tmp="+m, func(t *testing.T) { test(t, m) })
	}
}

// modeLine is what prepare says in the job log in each mode.
func modeLine(mode string) string {
	if mode == "off" {
		return "Sandbox: no private /tmp (--private-tmp=off)"
	}
	return "Sandbox: private /tmp and /var/tmp (user+mount namespace)"
}

func setupIsolation(t *testing.T, privateTmp string) *isoSetup {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("creates an unprivileged runner user: needs root (CI runs as root)")
	}
	if _, err := sandbox.Probe(); err != nil {
		t.Skipf("no Landlock on this kernel: %v", err)
	}
	u, err := user.Lookup(isoUser)
	if err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/bash", isoUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v %s", err, out)
		}
		if u, err = user.Lookup(isoUser); err != nil {
			t.Fatal(err)
		}
	}
	s := &isoSetup{privateTmp: privateTmp}
	s.uid, _ = strconv.Atoi(u.Uid)
	s.gid, _ = strconv.Atoi(u.Gid)
	// Not under /tmp: with a private /tmp the job sees there only its own
	// dirs, and the runner user's home (its driver's git remotes, say)
	// lives elsewhere on a real host too.
	s.dir, err = os.MkdirTemp(isoBase, "ferry-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	os.Chmod(s.dir, 0o755)
	proctest.CopyExecutable(t, ferryBin, filepath.Join(s.dir, "ferry"))
	self, _ := os.Executable()
	proctest.CopyExecutable(t, self, filepath.Join(s.dir, "stages.test"))
	shim := exec.Command("go", "build", "-o", filepath.Join(s.dir, "glshim"), "./internal/runnerdriver/internal/glshim")
	shim.Dir = ferrybuild.RepoRoot()
	if out, err := shim.CombinedOutput(); err != nil {
		t.Fatalf("building the gitlab-runner shim: %v %s", err, out)
	}
	os.Chmod(filepath.Join(s.dir, "glshim"), 0o755)

	// The user's own home for this test: state, builds, caches and secrets.
	s.home = filepath.Join(s.dir, "home")
	s.rv = filepath.Join(s.dir, "rv")
	for _, d := range []string{s.home, s.rv} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chown(d, s.uid, s.gid)
	}
	for _, rel := range runnerHomeSecrets {
		p := filepath.Join(s.home, rel)
		for d := filepath.Dir(p); d != s.home; d = filepath.Dir(d) {
			os.MkdirAll(d, 0o700)
			os.Chown(d, s.uid, s.gid)
		}
		if err := os.WriteFile(p, []byte(secretHome+" "+rel+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, s.uid, s.gid)
	}
	return s
}

// helper starts this test binary as the runner user in role.
func (s *isoSetup) helper(t *testing.T, role string, stdout io.Writer) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.dir, "stages.test"), "-test.run=^TestHelperProcessIsolation$", "-test.v", "-test.timeout=5m")
	cmd.Env = []string{
		"FERRY_ISO_ROLE=" + role, "FERRY_ISO_DIR=" + s.dir, "FERRY_ISO_RV=" + s.rv, "FERRY_ISO_PRIVATE_TMP=" + s.privateTmp,
		"HOME=" + s.home, "USER=" + isoUser, "LOGNAME=" + isoUser,
		"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
	}
	cmd.Dir = s.home
	cmd.Stdout, cmd.Stderr = stdout, stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}, Setpgid: true}
	return cmd
}

// runHelper runs the helper process in role (env added to its environment)
// and decodes the RESULT-JSON line it prints into result. It returns the
// helper's whole output, for failure messages.
func (s *isoSetup) runHelper(t *testing.T, role string, result any, env ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := s.helper(t, role, &out)
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out.String())
	}
	res := out.String()
	i := strings.Index(res, "RESULT-JSON ")
	if i < 0 {
		t.Fatalf("helper gave no result:\n%s", res)
	}
	line, _, _ := strings.Cut(res[i+len("RESULT-JSON "):], "\n")
	if err := json.Unmarshal([]byte(line), result); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestIsolationAttacks: job B of another project, running at the same time
// as job A on the same runner user, tries to read A's kubeconfig, build
// dir, payload and stage scripts, A's process environment and memory, the
// runner user's secret files, to write what all jobs share, and to signal
// A's processes. Every attempt must fail, B's ordinary work must not, and
// none of A's secrets may show up in B's log or on disk outside A's dirs.
//
// It runs in both sandbox modes: with a private /tmp and without.
func TestIsolationAttacks(t *testing.T) { forEachTmpMode(t, isolationAttacks) }

func isolationAttacks(t *testing.T, mode string) {
	s := setupIsolation(t, mode)
	var logs struct{ A, B, AStatus, BStatus string }
	s.runHelper(t, "attack", &logs)
	if logs.AStatus != runnerdriver.StatusSuccess || logs.BStatus != runnerdriver.StatusSuccess {
		t.Errorf("job A %s, job B %s\nA:\n%s\nB:\n%s", logs.AStatus, logs.BStatus, logs.A, logs.B)
	}
	if !strings.Contains(logs.B, "Sandbox: on (Landlock ABI") {
		t.Errorf("B's log does not say the sandbox is on:\n%s", logs.B)
	}
	if !strings.Contains(logs.B, modeLine(mode)) {
		t.Errorf("B's log does not say %q:\n%s", modeLine(mode), logs.B)
	}
	for _, l := range strings.Split(logs.B, "\n") {
		if strings.Contains(l, "ATTACK-WORKED") || strings.Contains(l, "CONTROL-FAILED") {
			t.Errorf("B: %s", strings.TrimSpace(l))
		}
	}
	if n := strings.Count(logs.B, "ATTACK-DENIED "); n != len(attacks)+len(runnerHomeSecrets) {
		t.Errorf("B ran %d attacks, want %d:\n%s", n, len(attacks)+len(runnerHomeSecrets), logs.B)
	}
	if n := strings.Count(logs.B, "CONTROL-OK "); n != len(controls) {
		t.Errorf("B ran %d controls, want %d:\n%s", n, len(controls), logs.B)
	}
	for _, sec := range []string{secretABuild, secretAEnv, secretAKube, secretHome} {
		if strings.Contains(logs.B, sec) {
			t.Errorf("B's log holds %s", sec)
		}
	}
	// A's signalled sleep is still A's business: it must have been alive
	// when B was done (A checks and says so).
	if !strings.Contains(logs.A, "A-SLEEP-SURVIVED") {
		t.Errorf("B's signal reached A's process:\n%s", logs.A)
	}
	// Nothing of A's leaked onto the disk outside A's own dirs and the
	// runner's home secrets (B could have copied what it read).
	filepath.Walk(s.home, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() || info.Size() > 1<<20 || strings.Contains(p, "/ferry-engine-") {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, sec := range []string{secretAEnv, secretAKube} {
			if bytes.Contains(b, []byte(sec)) {
				t.Errorf("%s holds %s", p, sec)
			}
		}
		return nil
	})
}

// attacks are B's attempts (name, command); $A_* come from the rendezvous
// files A wrote. Each must fail.
var attacks = [][2]string{
	{"read-a-kubeconfig", `cat "$A_STATE/kubeconfig"`},
	{"read-a-state-secrets", `cat "$A_STATE/secrets.json"`},
	{"list-a-state", `ls "$A_STATE"`},
	{"list-state-jobs", `ls "$FERRY_STATE_DIR/jobs"`},
	{"read-a-build", `cat "$A_PROJ/a-secret.txt"`},
	{"list-a-build", `ls "$A_PROJ"`},
	{"write-a-build", `echo pwned > "$A_PROJ/pwned"`},
	{"read-a-payload", `cat "$A_TMP/response.json"`},
	{"read-a-stage-script", `cat "$A_SCRIPT"`},
	// Every stage script of A lives in A's runner temp dir, the 19.3
	// cleanup_file_variables one (every variable exported in clear) too,
	// written after this attack: the whole dir must be hidden, not the
	// scripts that exist now.
	{"list-a-runner-tmp", `ls "$A_TMP"`},
	{"read-a-later-stage-script", `cat "$A_TMP"/script*/*`},
	{"read-a-environ", `cat /proc/$A_PID/environ`},
	{"read-a-child-environ", `cat /proc/$A_SLEEP/environ`},
	{"read-a-mem", `head -c 16 /proc/$A_SLEEP/mem`},
	{"signal-a-child", `kill -TERM $A_SLEEP`},
	{"signal-a-script", `kill -CONT $A_PID`},
	{"signal-ferry", `kill -CONT $PPID`},
	{"write-discovery-cache", `mkdir -p "$FERRY_STATE_DIR/cache/discovery/x" && echo poison > "$FERRY_STATE_DIR/cache/discovery/x/p"`},
	{"write-engine-dir", `echo x > "$FERRY_STATE_DIR/engine/planted"`},
	{"write-engine", `f=$(readlink -f "$(command -v kubectl)") && [ -f "$f" ] && printf x >> "$f"`},
	{"write-state-root", `echo x > "$FERRY_STATE_DIR/planted"`},
	{"write-own-secrets-json", `echo '[]' > "$FERRY_STATE_DIR/jobs/$FERRY_JOB_KEY/secrets.json"`},
	{"write-own-cleanup-json", `echo '["/"]' > "$FERRY_STATE_DIR/jobs/$FERRY_JOB_KEY/cleanup.json"`},
	{"write-own-bin", `echo x > "$FERRY_STATE_DIR/jobs/$FERRY_JOB_KEY/bin/evil"`},
	{"write-own-payload", `echo '{}' > "$(dirname "$(dirname "$0")")/response.json"`},
	{"write-runner-home", `echo x > "$RUNNER_HOME/.bashrc-planted"`},
	{"read-a-home", `cat "$A_HOME/.gitconfig"`},
	{"list-a-home", `ls "$A_HOME"`},
	{"write-a-home", `echo x > "$A_HOME/.cache/planted"`},
	{"list-homes", `ls "$(dirname "$HOME")"`},
}

// controls are B's ordinary work; each must succeed.
var controls = [][2]string{
	{"read-system", `cat /etc/passwd`},
	{"write-build-dir", `echo x > own.txt && mkdir -p d/e && mv own.txt d/e/f`},
	{"write-tmpdir", `f=$(mktemp) && echo x > "$f" && rm "$f"`},
	{"git-log", `git log -1 --format=%H`},
	{"git-commit", `git -c user.email=b@x -c user.name=b commit -q --allow-empty -m b`},
	{"kubectl-client", `kubectl version --client`},
	{"own-child-signal", `sleep 30 & p=$!; kill $p; wait $p; [ $? = 143 ]`},
	{"own-child-environ", `sleep 30 & p=$!; cat /proc/$p/environ >/dev/null; kill $p`},
	{"http-local", `exec 3<>/dev/tcp/127.0.0.1/$HTTP_PORT && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && grep -q local-service <&3`},
	{"compile-and-run", `printf 'int main(){return 0;}' > t.c && { command -v cc >/dev/null || exit 0; } && cc -o t t.c && ./t`},
}

func attackScript(rv string) []string {
	var b strings.Builder
	fmt.Fprintf(&b, `RV=%s
echo "$FERRY_STATE_DIR/jobs/$FERRY_JOB_KEY" > "$RV/b.state"
for i in $(seq 600); do [ -e "$RV/a.ready" ] && [ -e "$RV/kube.planted" ] && break; sleep 0.1; done
A_STATE=$(cat "$RV/a.state"); A_PROJ=$(cat "$RV/a.projdir"); A_SCRIPT=$(cat "$RV/a.script")
A_PID=$(cat "$RV/a.pid"); A_SLEEP=$(cat "$RV/a.sleep.pid"); A_TMP=$(dirname "$(dirname "$A_SCRIPT")")
A_HOME=$(cat "$RV/a.home"); RUNNER_HOME=$(dirname "$RV")/home
try() { if ( eval "$2" ) >/dev/null 2>&1; then echo "ATTACK-WORKED $1"; else echo "ATTACK-DENIED $1"; fi; }
control() { if ( eval "$2" ) >/dev/null 2>&1; then echo "CONTROL-OK $1"; else echo "CONTROL-FAILED $1"; ( eval "$2" ) 2>&1 | head -5 || true; fi; }
`, rv)
	for _, a := range attacks {
		fmt.Fprintf(&b, "try %s %s\n", a[0], shellQuote(a[1]))
	}
	for _, f := range runnerHomeSecrets {
		fmt.Fprintf(&b, "try home-%s %s\n", f, shellQuote(`cat "$RUNNER_HOME/`+f+`"`))
	}
	for _, c := range controls {
		fmt.Fprintf(&b, "control %s %s\n", c[0], shellQuote(c[1]))
	}
	b.WriteString(`touch "$RV/b.done"` + "\n")
	return []string{b.String()}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func victimScript(rv string) []string {
	return []string{fmt.Sprintf(`RV=%s
echo %s > a-secret.txt
export A_ENV_SECRET=%s
sleep 317 &
S=$!
echo $S > "$RV/a.sleep.pid"
echo $$ > "$RV/a.pid"
echo "$CI_PROJECT_DIR" > "$RV/a.projdir"
echo "$FERRY_STATE_DIR/jobs/$FERRY_JOB_KEY" > "$RV/a.state"
echo "$0" > "$RV/a.script"
git config --global user.email a@example.com && mkdir -p ~/.cache && echo "$HOME" > "$RV/a.home"
touch "$RV/a.ready"
for i in $(seq 900); do [ -e "$RV/b.done" ] && break; sleep 0.1; done
[ -e "$RV/b.done" ] || { echo "B never finished"; exit 1; }
kill -0 $S && echo A-SLEEP-SURVIVED
kill $S`, rv, secretABuild, secretAEnv)}
}

// TestHelperProcessIsolation is not a test: it is the unprivileged runner
// the tests above start (FERRY_ISO_ROLE says which part it plays).
func TestHelperProcessIsolation(t *testing.T) {
	role := os.Getenv("FERRY_ISO_ROLE")
	if role == "" {
		t.Skip("helper process of TestIsolation*")
	}
	dir, rv := os.Getenv("FERRY_ISO_DIR"), os.Getenv("FERRY_ISO_RV")
	newDriver := func(base string) *runnerdriver.Driver {
		d, err := runnerdriver.New(runnerdriver.Config{
			FerryBinary: filepath.Join(dir, "ferry"), ShimBinary: filepath.Join(dir, "glshim"),
			BaseDir: base, Env: os.Environ(),
			ExtraArgs:           []string{"--grace-period=1s", "--kube-sources=none", "--sandbox-writable=" + rv, "--private-tmp=" + os.Getenv("FERRY_ISO_PRIVATE_TMP")},
			GracefulKillTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	switch role {
	case "attack":
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "local-service\n") }))
		defer srv.Close()
		port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
		d := newDriver(filepath.Join(os.Getenv("HOME"), "driver"))
		type res struct {
			name string
			r    *runnerdriver.PipelineResult
		}
		done := make(chan res, 2)
		go func() {
			done <- res{"A", d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-a/deploy", ProjectID: 101,
				Jobs: []runnerdriver.Job{{Name: "a", Script: victimScript(rv)}}})}
		}()
		go func() {
			done <- res{"B", d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-b/attack", ProjectID: 202,
				Jobs: []runnerdriver.Job{{Name: "b", Script: attackScript(rv), Variables: []runnerdriver.Variable{{Key: "HTTP_PORT", Value: port}}}}})}
		}()
		// The runner side plants A's kubeconfig (what pkg/kubecreds would
		// write) once A says where its state is.
		go func() {
			for i := 0; i < 1200; i++ {
				a, aerr := os.ReadFile(filepath.Join(rv, "a.state"))
				b, berr := os.ReadFile(filepath.Join(rv, "b.state"))
				if aerr == nil && len(a) > 0 && berr == nil && len(b) > 0 {
					os.WriteFile(filepath.Join(strings.TrimSpace(string(a)), "kubeconfig"), []byte(secretAKube+"\n"), 0o600)
					os.WriteFile(filepath.Join(rv, "kube.planted"), nil, 0o600)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		var out struct{ A, B, AStatus, BStatus string }
		for i := 0; i < 2; i++ {
			r := <-done
			j := r.r.Jobs[map[string]string{"A": "a", "B": "b"}[r.name]]
			if r.name == "A" {
				out.A, out.AStatus = j.Log, j.Status
			} else {
				out.B, out.BStatus = j.Log, j.Status
			}
		}
		b, _ := json.Marshal(out)
		fmt.Printf("RESULT-JSON %s\n", b)
	case "holder":
		holderRole(ctx, newDriver(filepath.Join(os.Getenv("HOME"), "driver")), rv)
	case "tmp":
		privateTmpRole(ctx, t, newDriver(filepath.Join(os.Getenv("HOME"), "driver")), rv)
	case "survivors":
		// The job leaves every kind of background process and then waits;
		// the test SIGKILLs this runner (and maybe ferry) meanwhile.
		d := newDriver(filepath.Join(os.Getenv("HOME"), "driver"))
		script := fmt.Sprintf(`RV=%s
sleep 3101 &
setsid sleep 3102 &
nohup sleep 3103 >/dev/null 2>&1 &
( ( sleep 3104 & ) & )
env -i sleep 3105 &
env -i setsid sleep 3106 &
( env -i bash -c 'exec 0<&- 1>&- 2>&-; setsid sleep 3107 & ' & )
echo "$FERRY_STATE_DIR/jobs/$FERRY_JOB_KEY" > "$RV/state"
echo $PPID > "$RV/ferry.pid"
sleep 0.3
touch "$RV/ready"
sleep 3100`, rv)
		d.RunJob(ctx, runnerdriver.Job{Name: "bg", Script: []string{script}})
		t.Fatal("the runner was meant to be killed mid-job")
	case "home":
		homeHelper(t, ctx, dir, rv)
	case "next":
		d := newDriver(filepath.Join(os.Getenv("HOME"), "driver2"))
		r := d.RunJob(ctx, runnerdriver.Job{Name: "next", Script: []string{"echo next-job-ran"}})
		fmt.Printf("NEXT-STATUS %s\n%s\n", r.Status, r.Log)
	}
}

// survivorArgs are the sleeps the survivors job starts.
var survivorArgs = []string{"3100", "3101", "3102", "3103", "3104", "3105", "3106", "3107"}

func survivors(except ...string) []string {
	var out []string
	for _, a := range survivorArgs {
		if len(except) > 0 && except[0] == a {
			continue
		}
		if len(procsWithArg(a)) > 0 {
			out = append(out, "sleep "+a)
		}
	}
	return out
}

func killSurvivors() {
	for _, a := range survivorArgs {
		for _, p := range procsWithArg(a) {
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// startSurvivors runs the survivors job and waits until it is ready.
func startSurvivors(t *testing.T, s *isoSetup) (*exec.Cmd, *bytes.Buffer) {
	killSurvivors()
	var out bytes.Buffer
	cmd := s.helper(t, "survivors", &out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); killSurvivors() })
	if !waitFor(90*time.Second, func() bool { _, err := os.Stat(filepath.Join(s.rv, "ready")); return err == nil }) {
		t.Fatalf("job never got ready:\n%s", out.String())
	}
	if !waitFor(10*time.Second, func() bool { return len(survivors()) == len(survivorArgs) }) {
		t.Fatalf("job started only %v", survivors())
	}
	return cmd, &out
}

func readRV(t *testing.T, s *isoSetup, name string) string {
	b, err := os.ReadFile(filepath.Join(s.rv, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestRunnerKilledNoSurvivors: the runner is SIGKILLed mid-job. ferry
// notices, ends the job as on cancel (&, setsid, nohup, double fork, env -i
// children included) and removes the job's state without waiting for a
// cleanup_exec that will never come.
func TestRunnerKilledNoSurvivors(t *testing.T) { forEachTmpMode(t, runnerKilledNoSurvivors) }

func runnerKilledNoSurvivors(t *testing.T, mode string) {
	s := setupIsolation(t, mode)
	cmd, out := startSurvivors(t, s)
	state := readRV(t, s, "state")
	holder := holderPID(t, state, mode)
	cmd.Process.Kill() // the runner only: ferry run lives on, orphaned
	cmd.Wait()
	// --grace-period=1s: SIGTERM, a second, SIGKILL, then cleanup's work.
	if !waitFor(15*time.Second, func() bool { return len(survivors()) == 0 }) {
		t.Errorf("survivors after the runner died: %v\n%s", survivors(), out.String())
	}
	if holder > 0 && !waitFor(5*time.Second, func() bool { return !jobproc.Running(holder) }) {
		t.Errorf("the job's namespace holder %d outlived the runner", holder)
	}
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(state); return os.IsNotExist(err) }) {
		t.Errorf("job state %s still on disk after the runner died", state)
	}
}

// TestRunnerAndFerryKilledNextPrepareSweeps: the runner and `ferry run`
// are both SIGKILLed, so nothing of ferry is left to stop the job; the
// next job's prepare finds that the old job's runner is gone and kills what
// is left of it (env -i children included) and removes its state at once.
func TestRunnerAndFerryKilledNextPrepareSweeps(t *testing.T) {
	forEachTmpMode(t, runnerAndFerryKilledNextPrepareSweeps)
}

func runnerAndFerryKilledNextPrepareSweeps(t *testing.T, mode string) {
	s := setupIsolation(t, mode)
	cmd, _ := startSurvivors(t, s)
	state := readRV(t, s, "state")
	holder := holderPID(t, state, mode)
	ferryPID, _ := strconv.Atoi(readRV(t, s, "ferry.pid"))
	// Both die before either can act on the other's death. Killed one
	// after the other, a loaded machine let ferry notice its dead runner
	// and end the job itself first ("nothing survived"). So the runner is
	// stopped first: alive, it does not make ferry clean up, and stopped,
	// it does not react to ferry's death (its cleanup_exec would). Not
	// ferry (tried): the runner's death then orphaned a process group with
	// a stopped member, and the kernel's SIGHUP to it killed the job's
	// processes. The runner's own group (helper: Setpgid) keeps its parent,
	// the test, in the session: never orphaned.
	syscall.Kill(cmd.Process.Pid, syscall.SIGSTOP)
	syscall.Kill(ferryPID, syscall.SIGKILL)
	if !waitFor(10*time.Second, func() bool { return !jobproc.Running(ferryPID) }) {
		t.Fatalf("ferry %d still runs 10 s after SIGKILL", ferryPID)
	}
	cmd.Process.Kill()
	cmd.Wait()
	time.Sleep(300 * time.Millisecond)
	if len(survivors()) == 0 {
		t.Fatal("nothing survived ferry's death: the test proves nothing")
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("state gone before the next prepare: %v", err)
	}
	var out bytes.Buffer
	next := s.helper(t, "next", &out)
	if err := next.Run(); err != nil || !strings.Contains(out.String(), "NEXT-STATUS success") {
		t.Fatalf("next job: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "whose runner is gone") {
		t.Errorf("next job's log does not say it removed the old job:\n%s", out.String())
	}
	// sleep 3107 closed every descriptor and cleared its environment
	// before its setsid: with ferry itself SIGKILLed nothing marks it
	// (docs/threat-model.md); every other kind must be gone.
	if got := survivors("3107"); len(got) > 0 {
		t.Errorf("survivors after the next prepare: %v", got)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("old job state %s still on disk after the next prepare (%v)", state, err)
	}
	if holder > 0 && jobproc.Running(holder) {
		t.Errorf("the old job's namespace holder %d still runs", holder)
	}
}

// holderPID is the private /tmp holder of the job whose state dir is
// state: running in mode auto (on x86-64), else 0.
func holderPID(t *testing.T, state, mode string) int {
	t.Helper()
	if mode != "auto" || runtime.GOARCH != "amd64" {
		return 0
	}
	pid, ok := jobproc.ReadPIDFile(filepath.Join(state, "tmpns", "holder.pid"))
	if !ok {
		t.Fatalf("no running namespace holder for the job in %s", state)
	}
	return pid
}
