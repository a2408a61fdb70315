package stages

// GITLAB_ENV: the file the runner's stage scripts read after exporting the
// job's variables. ferry writes there the overrides whose key is also a job
// variable (docs/ARCHITECTURE.md, "Giving the job script variables that
// win"), keeps a record of its own lines, and removes them at the end.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// gitlabEnvSafe is what a value must look like to go into GITLAB_ENV: it
// means the same whether the runner sources the file as shell or exports each
// line as is ([A-Za-z0-9_./:@%+,=-]*). Not a regexp: ferry starts once per
// stage, and compiling regexps at init was a measurable part of that.
func gitlabEnvSafe(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./:@%+,=-", r))
	}) < 0
}

// gitlabEnvRecord (in the state dir) holds the lines ferry wrote into
// GITLAB_ENV, so later stages neither duplicate them nor touch the user's.
const gitlabEnvRecord = "gitlab_env.lines"

// GitlabEnvPath is the file the runner's stage scripts source:
// <CI_PROJECT_DIR>.tmp/gitlab_runner_env (the runner's TmpProjectDir).
func GitlabEnvPath(env *jobenv.Env) string {
	pd, _ := env.JobVar("CI_PROJECT_DIR")
	if pd == "" {
		return ""
	}
	return filepath.Join(filepath.Clean(pd)+".tmp", "gitlab_runner_env")
}

// gitlabEnvLines are the KEY=value lines for overrides whose key is also a
// job variable (the stage script's export would hide the process
// environment's value). PATH gets the per-job bin dir in front.
func gitlabEnvLines(env *jobenv.Env, st *jobstate.State, overrides []jobstate.EnvVar, log *joblog.Logger) []string {
	vars := env.JobVars()
	var lines []string
	for _, e := range overrides {
		if _, isJobVar := vars[e.Key]; !isJobVar || e.Key == "PATH" {
			continue
		}
		switch {
		case e.Secret:
			log.Warnf("ferry: %s is a job variable and a secret: its ferry value is not written to GITLAB_ENV; the job's own value wins", e.Key)
		case !gitlabEnvSafe(e.Value):
			log.Warnf("ferry: %s: value has characters not safe in GITLAB_ENV: the job's own value wins", e.Key)
		default:
			lines = append(lines, e.Key+"="+e.Value)
		}
	}
	if p, ok := vars["PATH"]; ok {
		// The job defines PATH itself: keep the per-job bin dir in front of it.
		path := st.BinDir() + ":" + p
		for _, e := range overrides {
			if e.Key == "PATH" {
				path = st.BinDir() + ":" + e.Value
			}
		}
		if gitlabEnvSafe(path) {
			lines = append(lines, "PATH="+path)
		} else {
			log.Warnf("ferry: PATH job variable has characters not safe in GITLAB_ENV: %s is not on the job's PATH", st.BinDir())
		}
	}
	return lines
}

// writeGitlabEnv makes GITLAB_ENV hold ferry's lines exactly once. Lines
// already there are left where they are (a line the user added after ours
// keeps winning); lines ferry wrote earlier that changed are replaced; the
// user's own lines are never touched.
func writeGitlabEnv(env *jobenv.Env, st *jobstate.State, overrides []jobstate.EnvVar, log *joblog.Logger) error {
	want := gitlabEnvLines(env, st, overrides, log)
	path := GitlabEnvPath(env)
	if path == "" {
		if len(want) > 0 {
			return fmt.Errorf("ferry: CUSTOM_ENV_CI_PROJECT_DIR is not set: cannot write GITLAB_ENV")
		}
		return nil
	}
	prev, err := readLines(st.Path(gitlabEnvRecord))
	if err != nil {
		return err
	}
	if len(want) == 0 && len(prev) == 0 {
		return nil
	}
	cur, err := readLines(path)
	if err != nil {
		return err
	}
	next := reconcile(cur, prev, want)
	if !equalLines(cur, next) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("ferry: GITLAB_ENV %s: %w", path, err)
		}
		if err := jobstate.WriteFileAtomic(path, joinLines(next)); err != nil {
			return err
		}
	}
	if !equalLines(prev, want) {
		return jobstate.WriteFileAtomic(st.Path(gitlabEnvRecord), joinLines(want))
	}
	return nil
}

// removeGitlabEnv takes ferry's lines out of GITLAB_ENV (cleanup): the file
// may outlive the job in the build directory.
func removeGitlabEnv(env *jobenv.Env, st *jobstate.State) error {
	path := GitlabEnvPath(env)
	prev, err := readLines(st.Path(gitlabEnvRecord))
	if err != nil || path == "" || len(prev) == 0 {
		return err
	}
	cur, err := readLines(path)
	if err != nil || len(cur) == 0 {
		return err
	}
	next := reconcile(cur, prev, nil)
	if equalLines(cur, next) {
		return nil
	}
	return jobstate.WriteFileAtomic(path, joinLines(next))
}

// reconcile returns cur with the lines of prev that are not in want removed
// (one occurrence each) and the lines of want that are missing appended.
func reconcile(cur, prev, want []string) []string {
	wanted := map[string]bool{}
	for _, l := range want {
		wanted[l] = true
	}
	drop := map[string]int{}
	for _, l := range prev {
		if !wanted[l] {
			drop[l]++
		}
	}
	present := map[string]bool{}
	next := make([]string, 0, len(cur)+len(want))
	for _, l := range cur {
		if drop[l] > 0 {
			drop[l]--
			continue
		}
		present[l] = true
		next = append(next, l)
	}
	for _, l := range want {
		if !present[l] {
			next = append(next, l)
			present[l] = true
		}
	}
	return next
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ferry: read %s: %w", path, err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ferry: read %s: %w", path, err)
	}
	return lines, nil
}

func joinLines(lines []string) []byte {
	if len(lines) == 0 {
		return nil
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
