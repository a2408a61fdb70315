package runnerdriver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// RunPipeline runs the pipeline's jobs one after the other in stage order,
// the way GitLab schedules them: a job whose upstream failed is skipped
// (unless `when: always`), `needs`/`dependencies` choose which jobs' artifacts
// (and, with Config.GitLabDotenv, dotenv variables) it receives. ctx ending
// aborts the running job (like a runner shutdown) and skips the rest.
func (d *Driver) RunPipeline(ctx context.Context, p Pipeline) *PipelineResult {
	pr := &PipelineResult{ID: d.newPipelineID(), Status: StatusSuccess, Jobs: map[string]*JobResult{}}
	if p.ProjectPath == "" {
		p.ProjectPath = "group/project"
	}
	if p.ProjectID == 0 {
		p.ProjectID = 42
	}
	if p.Ref == "" {
		p.Ref = "master"
	}
	for i := range p.Jobs {
		if p.Jobs[i].Stage == "" {
			p.Jobs[i].Stage = "test"
		}
		if p.Jobs[i].Name == "" {
			p.Jobs[i].Name = fmt.Sprintf("job%d", i+1)
		}
	}
	stageIdx := stageOrder(p)
	jobs := append([]Job(nil), p.Jobs...)
	sort.SliceStable(jobs, func(a, b int) bool { return stageIdx[jobs[a].Stage] < stageIdx[jobs[b].Stage] })

	fail := func(msg string) *PipelineResult {
		pr.Status = StatusFailed
		for _, j := range jobs {
			pr.Jobs[j.Name] = &JobResult{Name: j.Name, Stage: j.Stage, Status: StatusFailed,
				FailureReason: ReasonSystemFailure, Error: msg}
			pr.Order = append(pr.Order, j.Name)
		}
		return pr
	}
	repoDir, sha, err := d.makeRepo(pr.ID, p)
	if err != nil {
		return fail(err.Error())
	}

	for _, job := range jobs {
		pr.Order = append(pr.Order, job.Name)
		upstream := upstreamJobs(job, jobs, stageIdx)
		if !shouldRun(job, upstream, pr) || ctx.Err() != nil {
			pr.Jobs[job.Name] = &JobResult{Name: job.Name, Stage: job.Stage, Status: StatusSkipped}
			continue
		}
		jc := &jobCtx{
			pipelineID: pr.ID, projectID: p.ProjectID, projectPath: p.ProjectPath,
			ref: p.Ref, sha: sha, repoURL: "file://" + repoDir,
			globalVars: p.Variables, projectVars: p.ProjectVariables, pipelineVars: p.PipelineVariables,
		}
		for _, name := range artifactSources(job, jobs, stageIdx) {
			up := pr.Jobs[name]
			if up == nil || up.Status == StatusSkipped || up.ID == 0 {
				continue
			}
			dep := dependency{ID: up.ID, Token: jobToken(up.ID), Name: up.Name}
			for _, a := range up.Artifacts {
				if a.Type == "archive" {
					dep.Filename = "artifacts.zip"
					dep.Size = dirSize(a.Dir)
				}
			}
			jc.deps = append(jc.deps, dep)
			jc.dotenvVars = append(jc.dotenvVars, up.Dotenv...)
		}
		res := d.runJob(ctx, job, jc)
		pr.Jobs[job.Name] = res
		if res.Status != StatusSuccess && !res.AllowedFailure {
			pr.Status = StatusFailed
		}
	}
	return pr
}

// stageOrder maps each stage to its position.
func stageOrder(p Pipeline) map[string]int {
	idx := map[string]int{}
	for i, s := range p.Stages {
		idx[s] = i
	}
	for _, j := range p.Jobs {
		if _, ok := idx[j.Stage]; !ok {
			idx[j.Stage] = len(idx)
		}
	}
	return idx
}

// upstreamJobs are the jobs whose outcome decides whether job runs: its
// needs, or else every job of an earlier stage.
func upstreamJobs(job Job, jobs []Job, stageIdx map[string]int) []string {
	var out []string
	if job.Needs != nil {
		for _, n := range job.Needs {
			out = append(out, n.Job)
		}
		return out
	}
	for _, j := range jobs {
		if stageIdx[j.Stage] < stageIdx[job.Stage] {
			out = append(out, j.Name)
		}
	}
	return out
}

// artifactSources is GitLab's dependencies[] for the job: earlier-stage jobs,
// or its needs with artifacts, narrowed by `dependencies:`.
func artifactSources(job Job, jobs []Job, stageIdx map[string]int) []string {
	var cand []string
	if job.Needs != nil {
		for _, n := range job.Needs {
			if !n.SkipArtifacts {
				cand = append(cand, n.Job)
			}
		}
	} else {
		cand = upstreamJobs(job, jobs, stageIdx)
	}
	if job.Dependencies == nil {
		return cand
	}
	allowed := map[string]bool{}
	for _, n := range job.Dependencies {
		allowed[n] = true
	}
	var out []string
	for _, c := range cand {
		if allowed[c] {
			out = append(out, c)
		}
	}
	// `dependencies:` may name jobs of earlier stages that `needs` left out:
	// GitLab rejects that configuration, so it is ignored here.
	return out
}

// shouldRun applies `when:` to the upstream jobs' outcome.
func shouldRun(job Job, upstream []string, pr *PipelineResult) bool {
	failed := false
	for _, name := range upstream {
		r := pr.Jobs[name]
		if r == nil {
			continue
		}
		if (r.Status == StatusFailed && !r.AllowedFailure) || r.Status == StatusCanceled {
			failed = true
		}
		// A skipped needed job skips the job that needs it.
		if r.Status == StatusSkipped && job.Needs != nil && job.When != "always" {
			return false
		}
	}
	switch job.When {
	case "always":
		return true
	case "on_failure":
		return failed
	case "never", "manual":
		return false
	default:
		return !failed
	}
}

// makeRepo creates the pipeline's project repository: one commit holding
// the pipeline's and jobs' files. Jobs clone it over file://.
func (d *Driver) makeRepo(pipelineID int, p Pipeline) (dir, sha string, err error) {
	dir = filepath.Join(d.cfg.BaseDir, "repos", fmt.Sprintf("%d", pipelineID), strings.ReplaceAll(p.ProjectPath, "/", "_")+".git")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("runnerdriver: repo: %w", err)
	}
	write := func(files map[string]string) error {
		for name, content := range files {
			f := filepath.Join(dir, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	if err := copyTree(p.SourceDir, dir); err != nil {
		return "", "", fmt.Errorf("runnerdriver: repo: %w", err)
	}
	if err := write(p.Files); err != nil {
		return "", "", fmt.Errorf("runnerdriver: repo: %w", err)
	}
	for _, j := range p.Jobs {
		if err := copyTree(j.SourceDir, dir); err != nil {
			return "", "", fmt.Errorf("runnerdriver: repo: %w", err)
		}
		if err := write(j.Files); err != nil {
			return "", "", fmt.Errorf("runnerdriver: repo: %w", err)
		}
	}
	if err := write(map[string]string{"README.md": "ferry runnerdriver test project\n"}); err != nil {
		return "", "", fmt.Errorf("runnerdriver: repo: %w", err)
	}
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-c", "user.name=Ferry Driver", "-c", "user.email=ferry@example.com",
			"-c", "commit.gpgsign=false", "-c", "init.defaultBranch=master"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_DATE=2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2024-01-01T00:00:00Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("runnerdriver: git %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	if _, err := git("init", "-q"); err != nil {
		return "", "", err
	}
	if _, err := git("checkout", "-q", "-B", p.Ref); err != nil {
		return "", "", err
	}
	if _, err := git("add", "-A"); err != nil {
		return "", "", err
	}
	if _, err := git("commit", "-q", "-m", "ferry driver commit"); err != nil {
		return "", "", err
	}
	sha, err = git("rev-parse", "HEAD")
	return dir, sha, err
}

// copyTree copies src (if set) into dst, leaving out .git.
func copyTree(src, dst string) error {
	if src == "" {
		return nil
	}
	return filepath.WalkDir(src, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if e.IsDir() && e.Name() == ".git" {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
