package stages_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// oneLine fails unless s is exactly one non-empty line containing every want.
func oneLine(t *testing.T, what, s string, want ...string) {
	t.Helper()
	s = strings.TrimSpace(s)
	if s == "" || strings.Contains(s, "\n") {
		t.Errorf("%s: want one line, got %q", what, s)
	}
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s: %q does not say %q", what, s, w)
		}
	}
}

// TestConfigRefusesStateDirInsideBuildsDir: config's own guard (prepare's
// would come too late for the runner's first look at builds_dir).
func TestConfigRefusesStateDirInsideBuildsDir(t *testing.T) {
	j := newJob(t, "")
	state := filepath.Join(j.builds, "tok12345", "state")
	j.args = append(j.args, "--state-dir="+state)
	r := j.ferry("config")
	if r.code != 2 || r.stdout != "" {
		t.Errorf("exit %d (want SYSTEM_FAILURE_EXIT_CODE 2), stdout %q", r.code, r.stdout)
	}
	oneLine(t, "config", r.stderr, "--state-dir "+state+" is inside --builds-dir "+j.builds)
	if _, err := os.Stat(state); err == nil {
		t.Error("config created the state dir inside the builds dir")
	}
}

// TestPrepareRefusesStateDirInsideBuildsDir: prepare's guard, for the
// builds root and for the job's project dir, before anything is created.
func TestPrepareRefusesStateDirInsideBuildsDir(t *testing.T) {
	for name, dir := range map[string]func(j *fakeJob) string{
		"builds root": func(j *fakeJob) string { return filepath.Join(j.builds, "ferry-state") },
		// Outside --builds-dir (the runner's builds_dir may differ from
		// ferry's), inside the project dir the runner reports.
		"project dir": func(j *fakeJob) string {
			j.project = filepath.Join(j.base, "elsewhere", "group", "proj")
			j.vars["CI_PROJECT_DIR"] = j.project
			return filepath.Join(j.project, ".state")
		},
	} {
		t.Run(name, func(t *testing.T) {
			j := newJob(t, "")
			state := dir(j)
			j.args = append(j.args, "--state-dir="+state)
			r := j.ferry("prepare")
			if r.code != 2 {
				t.Errorf("exit %d, want SYSTEM_FAILURE_EXIT_CODE 2", r.code)
			}
			oneLine(t, "prepare", r.stderr, "--state-dir "+state+" is inside the build directory")
			if _, err := os.Stat(state); err == nil {
				t.Error("prepare created the state dir inside the build directory")
			}
		})
	}
}

// TestPrepareRefusesStateDirOfAnotherUser: a state root that another user
// owns (or could have replaced) is not used, with one line naming owner and
// dir; the same for <state>/jobs.
func TestPrepareRefusesStateDirOfAnotherUser(t *testing.T) {
	other := 65534 // nobody, when the test can chown
	for _, sub := range []string{"", "jobs"} {
		t.Run("dir="+sub, func(t *testing.T) {
			j := newJob(t, "")
			target := filepath.Join(j.stateDir, sub)
			if err := os.MkdirAll(target, 0o700); err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() == 0 {
				if err := os.Chown(target, other, other); err != nil {
					t.Fatal(err)
				}
			} else if sub == "" {
				// Not root: a directory root owns stands for another user's.
				target = "/"
				j.args = append(j.args, "--state-dir=/")
			} else {
				t.Skip("needs root to give <state>/jobs to another user")
			}
			r := j.ferry("prepare")
			if r.code != 2 {
				t.Errorf("exit %d, want SYSTEM_FAILURE_EXIT_CODE 2", r.code)
			}
			oneLine(t, "prepare", r.stderr, "state dir "+filepath.Clean(target)+" is owned by uid ")
			if ents, _ := os.ReadDir(filepath.Join(j.stateDir, "jobs")); len(ents) != 0 {
				t.Errorf("a job dir was created below it: %v", ents)
			}
		})
	}
}

// TestJobIDVariableDoesNotNameTheJob: job B's variables claim job A's id
// (CI_JOB_ID) and instance; ferry keys B on its payload. B's prepare says so
// in one line, B's stages run in B's own state dir, and B's cleanup leaves
// A's state alone.
func TestJobIDVariableDoesNotNameTheJob(t *testing.T) {
	a := newJob(t, "")
	a.mustPrepare()
	aState := a.state()
	if err := aState.AddEnv("WHO", "job-a", false); err != nil {
		t.Fatal(err)
	}
	b := newJob(t, "")
	b.stateDir = a.stateDir
	b.args[0] = "--state-dir=" + a.stateDir
	b.vars["CI_JOB_ID"] = a.id
	r := b.ferry("prepare")
	if r.code != 0 {
		t.Fatalf("prepare B: %d %s", r.code, r.stderr)
	}
	warn := "job variables CI_JOB_ID=\"" + a.id + "\" (payload: " + b.id + ") disagree with the runner's job payload"
	if n := strings.Count(r.stdout, warn); n != 1 {
		t.Errorf("prepare B says %d times %q:\n%s", n, warn, r.stdout)
	}
	if b.state().Dir() == aState.Dir() {
		t.Fatal("B's state dir is A's")
	}
	r = b.ferry("run", b.script(`echo "who=[${WHO-}]"`), "build_script")
	if r.code != 0 || strings.Contains(r.stdout, "job-a") || strings.Contains(r.stdout, "disagree") {
		t.Errorf("run B: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := b.ferry("cleanup"); r.code != 0 {
		t.Errorf("cleanup B: %d %s", r.code, r.stderr)
	}
	if !aState.Exists() {
		t.Fatal("B's cleanup removed A's state")
	}
	// A's own stages still work.
	r = a.ferry("run", a.script(`echo "who=[${WHO-}]"`), "build_script")
	if r.code != 0 || !strings.Contains(r.stdout, "who=[job-a]") {
		t.Errorf("run A: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// TestStateDirOfAnotherToken: a state dir whose meta.json names another
// token (a job of another GitLab instance with the same id, or a planted
// dir) is neither used by run nor removed by cleanup.
func TestStateDirOfAnotherToken(t *testing.T) {
	a := newJob(t, "")
	a.mustPrepare()
	dir := a.state().Dir()
	a.token += "-other" // same id and instance, another token
	a.writePayload(a.timeout, a.pvars)
	r := a.ferry("run", a.script("echo ran"), "build_script")
	if r.code != 2 || strings.Contains(r.stdout, "ran") {
		t.Errorf("run with another token: %d %q", r.code, r.stdout)
	}
	oneLine(t, "run", r.stderr, "state dir "+dir+" belongs to another job")
	if r := a.ferry("prepare"); r.code != 2 || !strings.Contains(r.stderr, "belongs to another job") {
		t.Errorf("prepare with another token: %d %q", r.code, r.stderr)
	}
	a.ferry("cleanup")
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("cleanup with another token removed the dir: %v", err)
	}
}

// TestSymlinkedJobsDirRefused: <state>/jobs replaced by a symlink into a
// build directory is refused by prepare (one line, system failure) and
// nothing is written through it; run and cleanup of a job prepared before
// do not follow it either.
func TestSymlinkedJobsDirRefused(t *testing.T) {
	early := newJob(t, "")
	early.mustPrepare()
	jobs := filepath.Join(early.stateDir, "jobs")
	stolen := filepath.Join(early.project, "stolen")
	os.MkdirAll(stolen, 0o755)
	if err := os.Rename(jobs, jobs+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(stolen, jobs); err != nil {
		t.Fatal(err)
	}
	// The planted target holds a copy of the early job's dir, so a stage
	// that followed the link would find "its" state there.
	os.Rename(jobs+".old/"+filepath.Base(early.state().Dir()), filepath.Join(stolen, filepath.Base(early.state().Dir())))

	later := newJob(t, "")
	later.stateDir = early.stateDir
	later.args[0] = "--state-dir=" + early.stateDir
	r := later.ferry("prepare")
	if r.code != 2 {
		t.Errorf("prepare: exit %d, want SYSTEM_FAILURE_EXIT_CODE 2", r.code)
	}
	oneLine(t, "prepare", r.stderr, "state dir "+jobs+" is a symlink")
	for _, j := range []*fakeJob{early, later} {
		if r := j.ferry("run", j.script("echo ran"), "build_script"); r.code != 2 || strings.Contains(r.stdout, "ran") {
			t.Errorf("run through the symlink: %d %q %q", r.code, r.stdout, r.stderr)
		}
		j.ferry("cleanup")
	}
	ents, _ := os.ReadDir(stolen)
	if len(ents) != 1 || ents[0].Name() != filepath.Base(early.state().Dir()) {
		t.Errorf("build dir target now holds %v", ents)
	}
}

// TestProjectDirOutsideJobBuildsDir: a job whose CI_PROJECT_DIR variable
// points outside the builds_dir config gave it (job_env) is refused at
// prepare (a build failure: its own variable), before ferry writes
// GITLAB_ENV or reads dotenv reports there.
func TestProjectDirOutsideJobBuildsDir(t *testing.T) {
	j := newJob(t, "")
	victim := filepath.Join(j.builds, "tok12345", "1", "other", "project")
	j.extra = append(j.extra, "FERRY_JOB_BUILDS_DIR="+filepath.Join(j.builds, "tok12345", "0"))
	j.vars["CI_PROJECT_DIR"] = victim
	r := j.ferry("prepare")
	if r.code != 1 {
		t.Errorf("exit %d, want BUILD_FAILURE_EXIT_CODE 1", r.code)
	}
	oneLine(t, "prepare", r.stderr, `CUSTOM_ENV_CI_PROJECT_DIR "`+victim+`" is not inside this job's builds_dir`)
	// Inside it, the same job prepares.
	j.vars["CI_PROJECT_DIR"] = j.project
	j.mustPrepare()
}
