package runnerdriver

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// payloadVariables are the variables GitLab puts in the job payload, in
// GitLab's precedence order (later wins): predefined, top-level and job
// .gitlab-ci.yml variables, dotenv, project, pipeline.
func (jr *jobRun) payloadVariables() []Variable {
	d, jc, job := jr.d, jr.jc, jr.job
	u, _ := url.Parse(d.cfg.ServerURL)
	host := ""
	if u != nil {
		host = u.Host
	}
	name := path.Base(jc.projectPath)
	ns := path.Dir(jc.projectPath)
	pub := func(k, v string) Variable { return Variable{Key: k, Value: v, Public: true} }
	vars := []Variable{
		pub("CI_PIPELINE_ID", strconv.Itoa(jc.pipelineID)),
		pub("CI_PIPELINE_IID", strconv.Itoa(jc.pipelineID%1000)),
		pub("CI_PIPELINE_SOURCE", "push"),
		pub("CI_PIPELINE_URL", fmt.Sprintf("%s/%s/-/pipelines/%d", d.cfg.ServerURL, jc.projectPath, jc.pipelineID)),
		pub("CI_JOB_ID", strconv.Itoa(jr.id)),
		pub("CI_JOB_URL", fmt.Sprintf("%s/%s/-/jobs/%d", d.cfg.ServerURL, jc.projectPath, jr.id)),
		pub("CI_JOB_NAME", job.Name),
		pub("CI_JOB_NAME_SLUG", slug(job.Name)),
		pub("CI_JOB_STAGE", job.Stage),
		{Key: "CI_JOB_TOKEN", Value: jr.token, Masked: true},
		pub("CI", "true"),
		pub("GITLAB_CI", "true"),
		pub("CI_SERVER_URL", d.cfg.ServerURL),
		pub("CI_SERVER_HOST", host),
		pub("CI_SERVER_NAME", "GitLab"),
		pub("CI_API_V4_URL", d.cfg.ServerURL+"/api/v4"),
		pub("CI_PROJECT_ID", strconv.Itoa(jc.projectID)),
		pub("CI_PROJECT_NAME", name),
		pub("CI_PROJECT_TITLE", name),
		pub("CI_PROJECT_PATH", jc.projectPath),
		pub("CI_PROJECT_PATH_SLUG", slug(jc.projectPath)),
		pub("CI_PROJECT_NAMESPACE", ns),
		pub("CI_PROJECT_ROOT_NAMESPACE", strings.Split(ns, "/")[0]),
		pub("CI_PROJECT_URL", d.cfg.ServerURL+"/"+jc.projectPath),
		pub("CI_PROJECT_VISIBILITY", "private"),
		pub("CI_DEFAULT_BRANCH", "master"),
		pub("CI_COMMIT_SHA", jc.sha),
		pub("CI_COMMIT_SHORT_SHA", jc.sha[:8]),
		pub("CI_COMMIT_BEFORE_SHA", strings.Repeat("0", 40)),
		pub("CI_COMMIT_REF_NAME", jc.ref),
		pub("CI_COMMIT_REF_SLUG", slug(jc.ref)),
		pub("CI_COMMIT_BRANCH", jc.ref),
		pub("CI_COMMIT_MESSAGE", "ferry driver commit"),
		pub("CI_COMMIT_TITLE", "ferry driver commit"),
		pub("CI_REPOSITORY_URL", jc.repoURL),
		pub("CI_RUNNER_ID", "1"),
		pub("CI_RUNNER_DESCRIPTION", d.cfg.RunnerName),
		pub("CI_RUNNER_TAGS", `["shell"]`),
		pub("CI_NODE_TOTAL", "1"),
		pub("GITLAB_USER_ID", "1"),
		pub("GITLAB_USER_LOGIN", "ferry"),
		pub("GITLAB_USER_NAME", "Ferry Driver"),
		pub("GITLAB_USER_EMAIL", "ferry@example.com"),
	}
	if job.Image != "" {
		vars = append(vars, pub("CI_JOB_IMAGE", job.Image))
	}
	if len(job.Services) > 0 {
		b, _ := json.Marshal(jr.payloadServices())
		vars = append(vars, pub("CI_JOB_SERVICES", string(b)))
	}
	vars = append(vars, jc.globalVars...)
	vars = append(vars, job.Variables...)
	vars = append(vars, jc.dotenvVars...)
	vars = append(vars, jc.projectVars...)
	vars = append(vars, jc.pipelineVars...)
	return dedupe(vars)
}

// allVariables is the runner's Build.GetAllVariables: its own variables
// around the payload's, expanded. CI_BUILDS_DIR and CI_PROJECT_DIR are empty
// until config_exec told the builds dir, as in the runner.
func (jr *jobRun) allVariables() []Variable {
	d := jr.d
	buildsDir, projectDir := "", ""
	if jr.projectDir != "" {
		buildsDir, projectDir = jr.buildsDir, jr.projectDir
	}
	internal := func(k, v string) Variable { return Variable{Key: k, Value: v, Public: true} }
	vars := append([]Variable(nil), d.cfg.RunnerVariables...)
	vars = append(vars,
		internal("CI_BUILDS_DIR", buildsDir),
		internal("CI_PROJECT_DIR", projectDir),
		internal("CI_CONCURRENT_ID", strconv.Itoa(jr.concurrentID)),
		internal("CI_CONCURRENT_PROJECT_ID", strconv.Itoa(jr.concurrentProjectID)),
		internal("CI_SERVER", "yes"),
		internal("CI_JOB_STATUS", jr.jobStatus),
		internal("CI_JOB_TIMEOUT", strconv.Itoa(int(jr.jobTimeout().Seconds()))),
		internal("CI_RUNNER_SHORT_TOKEN", d.cfg.RunnerShortToken),
	)
	vars = append(vars, jr.payloadVariables()...)
	vars = append(vars,
		internal("CI_SHARED_ENVIRONMENT", "true"),
		internal("CI_RUNNER_VERSION", d.cfg.RunnerVersion),
		internal("CI_RUNNER_REVISION", "ferrydrv"),
		internal("CI_RUNNER_EXECUTABLE_ARCH", runtime.GOOS+"/"+runtime.GOARCH),
	)
	return expand(dedupe(vars))
}

// jobTimeout is the job's timeout (GitLab's default: one hour).
func (jr *jobRun) jobTimeout() time.Duration {
	if jr.job.Timeout > 0 {
		return jr.job.Timeout
	}
	return time.Hour
}

// dedupe keeps the last occurrence of every key (the one that wins).
func dedupe(vars []Variable) []Variable {
	last := map[string]int{}
	for i, v := range vars {
		last[v.Key] = i
	}
	out := make([]Variable, 0, len(last))
	for i, v := range vars {
		if last[v.Key] == i {
			out = append(out, v)
		}
	}
	return out
}

// expand expands $VAR and ${VAR} in non-raw values against the list itself
// (unknown names become empty), like the runner's JobVariables.Expand.
func expand(vars []Variable) []Variable {
	m := make(map[string]string, len(vars))
	for _, v := range vars {
		m[v.Key] = v.Value
	}
	out := make([]Variable, len(vars))
	for i, v := range vars {
		if !v.Raw && strings.Contains(v.Value, "$") {
			v.Value = os.Expand(v.Value, func(k string) string {
				if k == "$" {
					return "$"
				}
				return m[k]
			})
		}
		out[i] = v
	}
	return out
}

var slugRe = regexp.MustCompile(`[^a-z0-9]+`)

func slug(s string) string {
	s = slugRe.ReplaceAllString(strings.ToLower(s), "-")
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "-")
}

// env is the process environment of every executor call.
func (jr *jobRun) env() []string {
	d := jr.d
	env := make([]string, 0, len(d.cfg.Env)+64)
	pathSet := false
	for _, kv := range d.cfg.Env {
		if strings.HasPrefix(kv, "PATH=") {
			kv = "PATH=" + d.shimDir + string(os.PathListSeparator) + strings.TrimPrefix(kv, "PATH=")
			pathSet = true
		}
		env = append(env, kv)
	}
	if !pathSet {
		env = append(env, "PATH="+d.shimDir+":/usr/local/bin:/usr/bin:/bin")
	}
	env = append(env,
		"TMPDIR="+jr.tmpDir,
		"BUILD_FAILURE_EXIT_CODE=1",
		"SYSTEM_FAILURE_EXIT_CODE=2",
		"JOB_RESPONSE_FILE="+jr.responseFile,
		// The shim stands in for GitLab: a real runner sends artifacts
		// over the network, the shim writes them into the store, which
		// ferry's sandbox must then let the job write (the admin's
		// option --sandbox-writable).
		"FERRY_SANDBOX_WRITABLE="+d.store,
		// Likewise the repositories get_sources clones and the shim
		// itself: a real runner fetches over the network and is installed
		// outside /tmp; here they are local paths under BaseDir, which a
		// job with a private /tmp would not see when BaseDir is there.
		"FERRY_SANDBOX_READABLE="+strings.Join(append([]string{filepath.Join(d.cfg.BaseDir, "repos"), d.shimDir, d.shimBin}, d.cfg.SandboxReadable...), ","),
	)
	// job_env first, so it cannot override a job variable (as the runner does).
	for k, v := range jr.jobEnv {
		env = append(env, k+"="+v)
	}
	for _, v := range jr.allVariables() {
		env = append(env, "CUSTOM_ENV_"+v.Key+"="+v.Value)
	}
	env = append(env, "CUSTOM_ENV_CI_JOB_IMAGE="+jr.job.Image)
	return env
}

func itoa(i int) string { return strconv.Itoa(i) }

func lastElem(p string) string { return path.Base(p) }
