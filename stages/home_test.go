package stages_test

// Issue 19 items 1 to 3 through the runner-faithful driver, the runner and
// its jobs running as an unprivileged user (setupIsolation): ordinary
// tools write the job's home, a project's second job finds what its first
// one left, another project sees none of it, the runner user's home is
// never written, the admin's files reach every home, and the three
// --job-home modes.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// The admin's files in the runner user's home.
const (
	adminGitconfig = "[url \"https://mirror.example/\"]\n\tinsteadOf = https://upstream.example/\n[safe]\n\tdirectory = *\n"
	adminSSHConfig = "Host monserveur\n  HostName 127.0.0.1\n  Port 1\n  User deploy\n"
	adminKnown     = "monserveur ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdminAdminAdminAdminAdminAdminAdminAdmin0\n"
	newHostLine    = "newhost ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIProjectProjectProjectProjectProjectProject\n"
)

func TestJobHomeAsRunnerUser(t *testing.T) {
	s := setupIsolation(t, "auto") // the default mode: a private /tmp
	for rel, content := range map[string]string{".gitconfig": adminGitconfig, ".ssh/config": adminSSHConfig, ".ssh/known_hosts": adminKnown} {
		p := filepath.Join(s.home, rel)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, s.uid, s.gid)
	}
	var jobs []homeJobResult
	res := s.runHelper(t, "home", &jobs)
	if len(jobs) != len(homeSteps) {
		t.Fatalf("%d job results, want %d:\n%s", len(jobs), len(homeSteps), res)
	}
	for k, j := range jobs {
		st := homeSteps[k]
		if j.Status != runnerdriver.StatusSuccess {
			t.Errorf("job %s: %s\n%s", st.name, j.Status, j.Log)
			continue
		}
		if !strings.Contains(j.Log, st.name+"-DONE") {
			t.Errorf("job %s did not finish its checks:\n%s", st.name, j.Log)
		}
		for _, w := range st.logHas {
			if !strings.Contains(j.Log, w) {
				t.Errorf("job %s: log lacks %q:\n%s", st.name, w, j.Log)
			}
		}
		if testing.Verbose() {
			t.Logf("job %s:\n%s", st.name, j.Log)
		}
		if len(j.RunnerHomeChanged) > 0 {
			t.Errorf("job %s changed the runner user's home: %v", st.name, j.RunnerHomeChanged)
		}
		for _, p := range j.Gone {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("job %s: %s still exists after cleanup", st.name, p)
			}
		}
	}
	// No home holds the runner user's secret files.
	filepath.WalkDir(filepath.Join(s.home, ".ferry", "homes"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secretHome)) {
				t.Errorf("%s holds a runner secret", p)
			}
		}
		return nil
	})
}

// homeJobResult is what the helper reports of one job.
type homeJobResult struct {
	Status, Log       string
	RunnerHomeChanged []string // files of the runner user's home the job changed
	Gone              []string // paths that must not exist after the job (rv/<name>.gone)
}

type homeStep struct {
	name, mode string
	project    int
	before     func(home string) // the admin's hand between jobs
	vars       []runnerdriver.Variable
	script     string
	logHas     []string
}

// homeSteps run in order, one job each.
var homeSteps = []homeStep{
	{name: "A1", mode: "project", project: 101, script: `
test "$HOME" != "$RUNNER_HOME"
case "$HOME" in "$FERRY_STATE_DIR"/homes/*-101) ;; *) echo "unexpected HOME $HOME"; exit 1;; esac
test "$XDG_CONFIG_HOME" = "$HOME/.config" && test "$XDG_CACHE_HOME" = "$HOME/.cache"
test "$XDG_DATA_HOME" = "$HOME/.local/share" && test "$XDG_STATE_HOME" = "$HOME/.local/state"
git config --global user.email ci@example.com
test "$(git config --global --get url.https://mirror.example/.insteadof)" = https://upstream.example/
mkdir -p ~/.cache/tool && echo warm > ~/.cache/tool/c
python3 -c 'import os; p=os.path.expanduser("~/.local/share/tool"); os.makedirs(p, exist_ok=True); open(p+"/d","w").write("x")'
mkdir -p "$XDG_CONFIG_HOME/helm" && echo "repositories: [stable]" > "$XDG_CONFIG_HOME/helm/repositories.yaml"
mkdir -p ~/.npm/_cacache && echo n > ~/.npm/_cacache/index
echo "` + strings.TrimSpace(newHostLine) + `" >> ~/.ssh/known_hosts
# ssh is ferry's shim, linked to the small ferry binary (not the engine).
test "$(basename "$(readlink "$(command -v ssh)")")" = ferry
ssh -G newhost | grep -x "userknownhostsfile $HOME/.ssh/known_hosts $HOME/.ssh/known_hosts2"
ssh -G monserveur | grep -x "hostname 127.0.0.1"
ssh -G monserveur | grep -x "identityfile $HOME/.ssh/id_ed25519"
# git over ssh reaches ssh through the shim: the admin's alias (port 1) is used.
out=$(git ls-remote monserveur:x 2>&1 || true); echo "$out" | grep "127.0.0.1 port 1"
echo "$HOME" > "$RV/A.home"
echo A1-DONE`,
		logHas: []string{"Home: HOME=", "this project's home, kept between its jobs", "Home: from the runner user's home: .gitconfig, .ssh/config, .ssh/known_hosts"}},
	{name: "A2", mode: "project", project: 101, script: `
test "$HOME" = "$(cat "$RV/A.home")"
test "$(git config --global --get user.email)" = ci@example.com
test "$(cat ~/.cache/tool/c)" = warm
test -f ~/.local/share/tool/d && test -f ~/.config/helm/repositories.yaml && test -f ~/.npm/_cacache/index
grep -q newhost ~/.ssh/known_hosts && grep -q monserveur ~/.ssh/known_hosts
echo A2-DONE`},
	{name: "B1", mode: "project", project: 202, script: `
test "$HOME" != "$(cat "$RV/A.home")"
test -z "$(git config --global --get user.email || true)"
test "$(git config --global --get url.https://mirror.example/.insteadof)" = https://upstream.example/
test ! -e ~/.cache/tool && test ! -e ~/.local/share/tool && test ! -e ~/.config/helm && test ! -e ~/.npm
if grep -q newhost ~/.ssh/known_hosts; then exit 1; fi
grep -q monserveur ~/.ssh/config
test ! -e ~/.ssh/id_ed25519
if ls "$(cat "$RV/A.home")" >/dev/null 2>&1; then echo listed-A-home; exit 1; fi
if cat "$(cat "$RV/A.home")/.gitconfig" >/dev/null 2>&1; then echo read-A-home; exit 1; fi
echo B1-DONE`},
	{name: "A3", mode: "project", project: 101,
		before: func(home string) {
			// The admin adds a host alias and a git setting.
			appendFile(filepath.Join(home, ".ssh/config"), "Host second\n  HostName 127.0.0.2\n")
			appendFile(filepath.Join(home, ".gitconfig"), "[core]\n\tabbrev = 12\n")
		},
		script: `
ssh -G second | grep -x "hostname 127.0.0.2"
test "$(git config --global --get user.email)" = ci@example.com
test -z "$(git config --global --get core.abbrev || true)"
echo A3-DONE`,
		logHas: []string{"Home: from the runner user's home: .ssh/config", "Home: this project's own .gitconfig kept"}},
	{name: "A4", mode: "project", project: 101,
		// A job's own HOME does not win (warned); its own XDG dir does.
		vars: []runnerdriver.Variable{{Key: "HOME", Value: "/tmp/job-chosen-home"}, {Key: "XDG_CACHE_HOME", Value: "/tmp/job-chosen-cache"}},
		script: `
test "$HOME" = "$(cat "$RV/A.home")"
test "$XDG_CACHE_HOME" = /tmp/job-chosen-cache
test "$XDG_CONFIG_HOME" = "$HOME/.config"
test "$(git config --global --get user.email)" = ci@example.com
echo A4-DONE`,
		logHas: []string{"Home: the job's HOME variable (/tmp/job-chosen-home) is replaced by this project's home"}},
	{name: "J1", mode: "job", project: 303, script: `
case "$HOME" in "$FERRY_STATE_DIR"/jobs/*/home) ;; *) echo "unexpected HOME $HOME"; exit 1;; esac
mkdir -p ~/.cache/tool && echo x > ~/.cache/tool/c
mkdir -p ~/go/pkg/mod/m && chmod -R a-w ~/go/pkg/mod
grep -q monserveur ~/.ssh/config
echo "$HOME" > "$RV/J1.gone"
echo J1-DONE`,
		logHas: []string{"a fresh home for this job, removed at cleanup"}},
	{name: "J2", mode: "job", project: 303, script: `
test ! -e ~/.cache/tool
echo J2-DONE`},
	{name: "R1", mode: "runner", project: 404, script: `
test "$HOME" = "$RUNNER_HOME"
if (echo x > ~/.planted-by-job) 2>/dev/null; then echo wrote-runner-home; exit 1; fi
echo R1-DONE`,
		logHas: []string{"HOME is the runner user's home", "shared by every project on this runner"}},
}

func appendFile(p, s string) {
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		panic(err)
	}
	f.WriteString(s)
	f.Close()
}

// homeSnapshot hashes every file of the runner user's home but ferry's
// and the driver's directories.
func homeSnapshot(home string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(home, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(home, p)
		if err != nil {
			return nil
		}
		switch strings.SplitN(rel, "/", 2)[0] {
		case ".ferry", "builds", "cache", "driver":
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		info, _ := d.Info()
		h := sha256.New()
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			h.Write(b)
		}
		if info != nil {
			fmt.Fprintf(h, "%v", info.Mode())
		}
		out[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	return out
}

// homeHelper is the unprivileged runner's side of TestJobHomeAsRunnerUser.
func homeHelper(t *testing.T, ctx context.Context, dir, rv string) {
	home := os.Getenv("HOME")
	var results []homeJobResult
	for _, st := range homeSteps {
		d, err := runnerdriver.New(runnerdriver.Config{
			FerryBinary: filepath.Join(dir, "ferry"), ShimBinary: filepath.Join(dir, "glshim"),
			BaseDir: filepath.Join(home, "driver"), Env: os.Environ(),
			ExtraArgs:           []string{"--grace-period=1s", "--kube-sources=none", "--sandbox-writable=" + rv, "--job-home=" + st.mode},
			GracefulKillTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		if st.before != nil {
			st.before(home)
		}
		before := homeSnapshot(home)
		script := "set -e\nRV=" + rv + "\nRUNNER_HOME=" + home + "\n" + st.script
		r := d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: fmt.Sprintf("team/p%d", st.project), ProjectID: st.project,
			Jobs: []runnerdriver.Job{{Name: "j", Script: []string{script}, Variables: st.vars}}})
		j := r.Jobs["j"]
		res := homeJobResult{Status: j.Status, Log: j.Log}
		after := homeSnapshot(home)
		for k, v := range after {
			if before[k] != v {
				res.RunnerHomeChanged = append(res.RunnerHomeChanged, k)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				res.RunnerHomeChanged = append(res.RunnerHomeChanged, k+" (removed)")
			}
		}
		if b, err := os.ReadFile(filepath.Join(rv, st.name+".gone")); err == nil {
			res.Gone = append(res.Gone, strings.TrimSpace(string(b)))
		}
		results = append(results, res)
	}
	b, _ := json.Marshal(results)
	fmt.Printf("RESULT-JSON %s\n", b)
}
