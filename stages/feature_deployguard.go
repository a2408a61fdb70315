package stages

import (
	"context"
	"flag"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gitlab.com/ferry-ci/ferry/pkg/deployguard"
	"gitlab.com/ferry-ci/ferry/pkg/failure"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// deployGuardFlags are the runner admin's --deploy-* settings (docs/deploy-safety.md).
var deployGuardFlags struct {
	On    bool
	Share StringList
}

// shareEntry is one --deploy-share entry: a project id or path.
var shareEntry = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_./-]*$`)

func init() {
	Register(Feature{
		Name: "deployguard",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&deployGuardFlags.On, "deploy-guard", true, "refuse to deploy an older pipeline over a newer one and to take over another project's objects (docs/deploy-safety.md)")
			fs.Var(&deployGuardFlags.Share, "deploy-share", "projects (ids or paths, comma-separated) that may change each other's deployed objects")
		},
		Prepare: deployGuardPrepare,
	})
}

// jobDeployGuard is the job's deploy rules for what ferry itself enforces
// (the Docker holder): identity from the payload (CI_PIPELINE_ID before
// runner 19.0, CI_PROJECT_PATH for people), opt-ins from the job's
// variables, the admin's share list. A bad opt-in value is the user's
// mistake.
func jobDeployGuard(j *Job) (*deployguard.Guard, error) {
	vars := j.Env.JobVars()
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	g, err := deployguard.FromEnv(lookup)
	if err != nil {
		return nil, failure.Build(fmt.Errorf("ferry: %w", err))
	}
	id := j.State.Job()
	g.ID.Instance = strings.TrimSuffix(id.ServerURL, "/")
	g.ID.JobID = id.ID
	g.ID.ProjectID = 0
	if j.Payload != nil {
		g.ID.ProjectID = j.Payload.JobInfo.ProjectID
		if p := j.Payload.JobInfo.PipelineID; p > 0 {
			g.ID.PipelineID = p
		}
	}
	g.Policy.Off = !deployGuardFlags.On
	g.Policy.Share = append([]string(nil), deployGuardFlags.Share...)
	return g, nil
}

// deployGuardPrepare gives the job script (its kubectl, the Docker holder)
// who the job is from the payload: env.json entries win over the job's own
// `variables:` (a copied CI_PROJECT_ID or FERRY_DEPLOY_* cannot misname
// the project), and the admin's settings.
func deployGuardPrepare(_ context.Context, j *Job) error {
	var vars []jobstate.EnvVar
	add := func(k, v string) { vars = append(vars, jobstate.EnvVar{Key: k, Value: v}) }
	if !deployGuardFlags.On {
		add(deployguard.EnvGuard, "off")
		return j.State.AddEnvs(vars)
	}
	for _, s := range deployGuardFlags.Share {
		if !shareEntry.MatchString(s) {
			return fmt.Errorf("ferry: --deploy-share: %q is not a project id or path", s)
		}
	}
	id := j.State.Job()
	add(deployguard.EnvInstance, strings.TrimSuffix(id.ServerURL, "/"))
	add(deployguard.EnvJob, id.IDString())
	if j.Payload != nil {
		if p := j.Payload.JobInfo.ProjectID; p > 0 {
			add(deployguard.EnvProjectID, strconv.FormatInt(p, 10))
		}
		if p := j.Payload.JobInfo.PipelineID; p > 0 {
			add(deployguard.EnvPipeline, strconv.FormatInt(p, 10))
		}
	}
	add(deployguard.EnvShare, strings.Join(deployGuardFlags.Share, ","))
	return j.State.AddEnvs(vars)
}
