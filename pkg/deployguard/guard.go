// Package deployguard holds the two deploy rules ferry enforces on every
// object (Kubernetes) or compose project / stack (Docker) it deploys:
//
//   - never an older pipeline over a newer one: an object last deployed by
//     pipeline N of a project is not deployed by a pipeline < N of the same
//     project and GitLab instance, unless the job rolls back on purpose
//     (FERRY_ROLLBACK=true, or a retried job of the older pipeline, which
//     GitLab itself treats as a rollback);
//   - no silent takeover: an object last deployed by another ferry project
//     of the same instance is not changed, unless the runner admin lets the
//     two projects share (--deploy-share) or the job opts in
//     (FERRY_TAKEOVER=true). Objects no ferry job recorded are taken over.
//
// Who deployed is recorded in the object's metadata (Kubernetes
// annotations, Docker labels) under the keys below. It is plain Go (no
// client library): the job's kubectl, the engine and the Docker connection
// holder all use it.
//
// These rules guard against mistakes and races between honest projects.
// A job holding the cluster's token (or the Docker engine's socket) can
// write any annotation or label itself; the boundary against a hostile
// project is RBAC (or separate Docker engines), not these records.
package deployguard

import (
	"fmt"
	"strconv"
	"strings"
)

// Record keys, on every object ferry deploys (Kubernetes annotations, Docker labels).
const (
	KeyInstance  = "ferry.gitlab.io/instance"    // the GitLab instance (origin URL)
	KeyProjectID = "ferry.gitlab.io/project-id"  // the payload's job_info.project_id
	KeyProject   = "ferry.gitlab.io/project"     // CI_PROJECT_PATH (for people; ids decide)
	KeyPipeline  = "ferry.gitlab.io/pipeline-id" // job_info.pipeline_id (19.0+), else CI_PIPELINE_ID
	KeyJob       = "ferry.gitlab.io/job-id"      // the payload's job id
)

// Variables ferry run gives the job script (from the payload, through the
// job's env.json so they win over the job's own `variables:`), read by the
// job's kubectl and the Docker holder. The CI_* fallbacks are used when a
// tool runs outside ferry run (a developer's shell, a test).
const (
	EnvInstance  = "FERRY_DEPLOY_INSTANCE"
	EnvProjectID = "FERRY_DEPLOY_PROJECT_ID"
	EnvPipeline  = "FERRY_DEPLOY_PIPELINE_ID"
	EnvJob       = "FERRY_DEPLOY_JOB_ID"
	// EnvShare is the admin's --deploy-share list, EnvGuard "off" when the
	// admin turned the rules off (--deploy-guard=false).
	EnvShare = "FERRY_DEPLOY_SHARE"
	EnvGuard = "FERRY_DEPLOY_GUARD"
	// The job's explicit opt-ins.
	EnvRollback = "FERRY_ROLLBACK"
	EnvTakeover = "FERRY_TAKEOVER"
)

// Identity is the deploying job as the guard sees it.
type Identity struct {
	Instance    string
	ProjectID   int64
	ProjectPath string
	PipelineID  int64
	JobID       int64
}

// Known reports whether the identity is complete enough to record and to
// check: instance, project and pipeline.
func (id Identity) Known() bool {
	return id.Instance != "" && id.ProjectID > 0 && id.PipelineID > 0
}

// Records are the keys and values recorded on what the job deploys.
func (id Identity) Records() map[string]string {
	if !id.Known() {
		return nil
	}
	m := map[string]string{
		KeyInstance:  id.Instance,
		KeyProjectID: strconv.FormatInt(id.ProjectID, 10),
		KeyPipeline:  strconv.FormatInt(id.PipelineID, 10),
	}
	if id.ProjectPath != "" {
		m[KeyProject] = id.ProjectPath
	}
	if id.JobID > 0 {
		m[KeyJob] = strconv.FormatInt(id.JobID, 10)
	}
	return m
}

// Policy is what a job may do beyond the rules.
type Policy struct {
	// Off: the admin turned the rules off (nothing is checked).
	Off bool
	// Rollback: the job deploys an older pipeline on purpose.
	Rollback bool
	// Takeover: the job takes over other projects' objects on purpose.
	Takeover bool
	// Share are the projects (ids or paths) the admin lets change each
	// other's objects.
	Share []string
}

// Guard checks one job's deploys.
type Guard struct {
	ID     Identity
	Policy Policy
}

// FromEnv builds the guard of the job whose variables lookup reads: the
// FERRY_DEPLOY_* values ferry run set from the payload first, the job's
// CI_* variables else. A malformed opt-in value is an error naming it.
func FromEnv(lookup func(string) (string, bool)) (*Guard, error) {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := get(k); v != "" {
				return v
			}
		}
		return ""
	}
	num := func(keys ...string) int64 {
		n, err := strconv.ParseInt(first(keys...), 10, 64)
		if err != nil || n < 0 {
			return 0
		}
		return n
	}
	g := &Guard{ID: Identity{
		Instance:    strings.TrimSuffix(first(EnvInstance, "CI_SERVER_URL"), "/"),
		ProjectID:   num(EnvProjectID, "CI_PROJECT_ID"),
		ProjectPath: get("CI_PROJECT_PATH"),
		PipelineID:  num(EnvPipeline, "CI_PIPELINE_ID"),
		JobID:       num(EnvJob, "CI_JOB_ID"),
	}}
	var err error
	if g.Policy.Rollback, err = boolVar(EnvRollback, get(EnvRollback)); err != nil {
		return nil, err
	}
	if g.Policy.Takeover, err = boolVar(EnvTakeover, get(EnvTakeover)); err != nil {
		return nil, err
	}
	switch strings.ToLower(get(EnvGuard)) {
	case "off", "false", "0", "no":
		g.Policy.Off = true
	}
	g.Policy.Share = SplitList(get(EnvShare))
	return g, nil
}

func boolVar(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "", "0", "false", "no", "off":
		return false, nil
	case "1", "true", "yes", "on":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q: want true or false", name, v)
}

// SplitList splits a comma (or space) separated list, dropping empty entries.
func SplitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
}

// Active reports whether the guard records and checks anything.
func (g *Guard) Active() bool { return g != nil && !g.Policy.Off && g.ID.Known() }

// Refusal is a deploy the rules refuse; Error is one line.
type Refusal struct {
	Target string // "deployment.apps/web in namespace prod", "compose project web"
	msg    string
}

func (r *Refusal) Error() string { return r.msg }

// Decision is what Check allows beyond the plain case: a rollback or a
// takeover the job asked for (the caller prints Note, one line).
type Decision struct {
	Note string
}

// Check decides whether the job may deploy target, whose recorded keys
// are rec (annotations or labels; nil or without ferry's keys: never
// deployed by a ferry job, taken over). It returns a *Refusal when the
// rules refuse it.
func (g *Guard) Check(target string, rec map[string]string) (Decision, error) {
	if !g.Active() || rec == nil {
		return Decision{}, nil
	}
	inst := strings.TrimSuffix(rec[KeyInstance], "/")
	pid, perr := strconv.ParseInt(rec[KeyProjectID], 10, 64)
	if inst == "" || perr != nil || inst != g.ID.Instance {
		// Never recorded by ferry, or by another GitLab instance: project
		// and pipeline ids of two instances cannot be compared.
		return Decision{}, nil
	}
	me := g.projectName(g.ID.ProjectPath, g.ID.ProjectID)
	if pid != g.ID.ProjectID {
		other := g.projectName(rec[KeyProject], pid)
		switch {
		case g.shared(pid, rec[KeyProject]):
			return Decision{}, nil
		case g.Policy.Takeover:
			return Decision{Note: fmt.Sprintf("ferry: %s: taking it over from project %s (%s=true)", target, other, EnvTakeover)}, nil
		}
		return Decision{}, &Refusal{Target: target, msg: fmt.Sprintf(
			"ferry: %s belongs to project %s, not to this project %s: refusing to take it over (set %s=true in this job to take it over, or the runner admin shares the two projects with --deploy-share)",
			target, other, me, EnvTakeover)}
	}
	last, err := strconv.ParseInt(rec[KeyPipeline], 10, 64)
	if err != nil || last <= g.ID.PipelineID {
		return Decision{}, nil
	}
	lastJob, _ := strconv.ParseInt(rec[KeyJob], 10, 64)
	switch {
	case g.Policy.Rollback:
		return Decision{Note: fmt.Sprintf("ferry: %s: rolling back from pipeline %d to pipeline %d (%s=true)", target, last, g.ID.PipelineID, EnvRollback)}, nil
	case lastJob > 0 && g.ID.JobID > lastJob:
		// GitLab ids jobs in creation order and creates every job of a
		// pipeline with it: a job of an older pipeline with a higher id
		// than the newer pipeline's deploy job was created after it, by a
		// retry, which GitLab treats as a rollback (Environments >
		// Rollback, "Allow job retries for rollback deployments").
		return Decision{Note: fmt.Sprintf("ferry: %s: rolling back from pipeline %d to pipeline %d (job %d is a retry, created after job %d that deployed pipeline %d)",
			target, last, g.ID.PipelineID, g.ID.JobID, lastJob, last)}, nil
	}
	return Decision{}, &Refusal{Target: target, msg: fmt.Sprintf(
		"ferry: %s was deployed by pipeline %d of %s, newer than this pipeline %d: refusing to deploy an older pipeline over a newer one (to roll back on purpose, retry this job in GitLab or set %s=true)",
		target, last, me, g.ID.PipelineID, EnvRollback)}
}

func (g *Guard) projectName(path string, id int64) string {
	if path == "" {
		return fmt.Sprintf("id %d", id)
	}
	return fmt.Sprintf("%s (id %d)", path, id)
}

// shared: both this project and the owner are in the admin's share list
// (by id or by path).
func (g *Guard) shared(ownerID int64, ownerPath string) bool {
	in := func(id int64, path string) bool {
		for _, s := range g.Policy.Share {
			if s == strconv.FormatInt(id, 10) || (path != "" && s == path) {
				return true
			}
		}
		return false
	}
	return in(g.ID.ProjectID, g.ID.ProjectPath) && in(ownerID, ownerPath)
}
