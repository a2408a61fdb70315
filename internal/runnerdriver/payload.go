package runnerdriver

import (
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"
)

// The job payload as GitLab's /api/v4/jobs/request returns it (the shape of
// shared/runner-protocol/job_response.example.json). The driver plays GitLab
// here, so it writes GitLab's JSON itself rather than through ferry's parsing
// types; a test checks that pkg/jobenv reads it.
type payloadVar struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
	Raw    bool   `json:"raw"`
}

type payloadStep struct {
	Name         string   `json:"name"`
	Script       []string `json:"script"`
	Timeout      int      `json:"timeout"`
	When         string   `json:"when"`
	AllowFailure bool     `json:"allow_failure"`
}

type payloadArtifact struct {
	Name           string   `json:"name"`
	Untracked      bool     `json:"untracked"`
	Paths          []string `json:"paths"`
	Exclude        []string `json:"exclude"`
	When           string   `json:"when"`
	ArtifactType   string   `json:"artifact_type"`
	ArtifactFormat string   `json:"artifact_format"`
	ExpireIn       string   `json:"expire_in"`
}

type payloadDependency struct {
	ID            int    `json:"id"`
	Token         string `json:"token"`
	Name          string `json:"name"`
	ArtifactsFile struct {
		Filename string `json:"filename"`
		Size     int64  `json:"size"`
	} `json:"artifacts_file"`
}

// payloadHook is one `hooks:` entry (pre_get_sources_script).
type payloadHook struct {
	Name   string   `json:"name"`
	Script []string `json:"script"`
}

type payload struct {
	ID            int    `json:"id"`
	Token         string `json:"token"`
	AllowGitFetch bool   `json:"allow_git_fetch"`
	JobInfo       struct {
		Name        string `json:"name"`
		Stage       string `json:"stage"`
		ProjectID   int    `json:"project_id"`
		ProjectName string `json:"project_name"`
		PipelineID  *int   `json:"pipeline_id,omitempty"` // 19.0+
	} `json:"job_info"`
	GitInfo struct {
		RepoURL   string   `json:"repo_url"`
		Ref       string   `json:"ref"`
		Sha       string   `json:"sha"`
		BeforeSha string   `json:"before_sha"`
		RefType   string   `json:"ref_type"`
		Refspecs  []string `json:"refspecs"`
		Depth     int      `json:"depth"`
	} `json:"git_info"`
	RunnerInfo struct {
		Timeout int `json:"timeout"`
	} `json:"runner_info"`
	Variables []payloadVar  `json:"variables"`
	Steps     []payloadStep `json:"steps"`
	Image     struct {
		Name string `json:"name"`
	} `json:"image"`
	Services     []payloadService    `json:"services"`
	Artifacts    []payloadArtifact   `json:"artifacts"`
	Cache        []any               `json:"cache"`
	Credentials  []any               `json:"credentials"`
	Dependencies []payloadDependency `json:"dependencies"`
	Features     struct {
		TraceSections     bool     `json:"trace_sections"`
		TokenMaskPrefixes []string `json:"token_mask_prefixes"`
		FailureReasons    []string `json:"failure_reasons"`
		// Tracing is an object or null (19.0+; absent before).
		Tracing json.RawMessage `json:"tracing,omitempty"`
	} `json:"features"`
	Hooks []payloadHook `json:"hooks,omitempty"`

	// 18.7+: inputs ({} when none); 18.9+: run as an array of step
	// objects, left out when empty; 19.0+: suspend_options ({}).
	Inputs         *map[string]any `json:"inputs,omitempty"`
	Run            []any           `json:"run,omitempty"`
	SuspendOptions *map[string]any `json:"suspend_options,omitempty"`
}

// payloadService is one services[] entry; variables appear since 19.0.
type payloadService struct {
	Name      string       `json:"name"`
	Alias     string       `json:"alias,omitempty"`
	Command   []string     `json:"command,omitempty"`
	Variables []payloadVar `json:"variables,omitempty"`
}

// jobToken is the job's CI_JOB_TOKEN. Like GitLab's, it cannot be guessed
// from the job id (a random part per driver process): ferry's isolation
// tests rely on a job not knowing another job's token.
func jobToken(id int) string { return "glcbt-" + tokenSalt + "-" + itoa(id) }

var tokenSalt = func() string {
	b := make([]byte, 12)
	crand.Read(b)
	return hex.EncodeToString(b)
}()

func (jr *jobRun) payloadJSON() ([]byte, error) {
	job, jc := jr.job, jr.jc
	var p payload
	p.ID, p.Token, p.AllowGitFetch = jr.id, jr.token, true
	p.JobInfo.Name, p.JobInfo.Stage, p.JobInfo.ProjectID = job.Name, job.Stage, jc.projectID
	p.JobInfo.ProjectName = lastElem(jc.projectPath)
	p.GitInfo.RepoURL, p.GitInfo.Ref, p.GitInfo.Sha = jc.repoURL, jc.ref, jc.sha
	p.GitInfo.BeforeSha, p.GitInfo.RefType = "0000000000000000000000000000000000000000", "branch"
	p.GitInfo.Refspecs = []string{"+refs/heads/*:refs/remotes/origin/*"}
	timeout := int(jr.jobTimeout() / time.Second)
	p.RunnerInfo.Timeout = timeout
	for _, v := range jr.payloadVariables() {
		p.Variables = append(p.Variables, payloadVar{Key: v.Key, Value: v.Value, Public: v.Public, File: v.File, Masked: v.Masked, Raw: v.Raw})
	}
	if len(job.PreGetSourcesScript) > 0 {
		p.Hooks = []payloadHook{{Name: "pre_get_sources_script", Script: job.PreGetSourcesScript}}
	}
	p.Steps = []payloadStep{{Name: "script", Script: nonNil(jr.scriptSteps()), Timeout: timeout, When: "on_success", AllowFailure: job.AllowFailure}}
	for _, s := range job.Steps {
		p.Steps = append(p.Steps, payloadStep{Name: s.Name, Script: nonNil(s.Script), Timeout: timeout, When: "on_success"})
	}
	if len(job.AfterScript) > 0 {
		p.Steps = append(p.Steps, payloadStep{Name: "after_script", Script: job.AfterScript, Timeout: timeout, When: "always", AllowFailure: true})
	}
	p.Image.Name = job.Image
	p.Services = jr.payloadServices()
	p.Cache, p.Credentials = []any{}, []any{}
	p.Artifacts = []payloadArtifact{}
	for _, a := range job.Artifacts {
		pa := payloadArtifact{Name: a.Name, Paths: a.Paths, When: a.When, ArtifactType: a.Type, ArtifactFormat: a.Format, ExpireIn: a.ExpireIn}
		if pa.When == "" {
			pa.When = "on_success"
		}
		if pa.ArtifactType == "" {
			pa.ArtifactType = "archive"
		}
		if pa.ArtifactFormat == "" {
			pa.ArtifactFormat = "zip"
			if pa.ArtifactType != "archive" {
				pa.ArtifactFormat = "gzip"
			}
		}
		p.Artifacts = append(p.Artifacts, pa)
	}
	p.Dependencies = []payloadDependency{}
	for _, dep := range jc.deps {
		pd := payloadDependency{ID: dep.ID, Token: dep.Token, Name: dep.Name}
		pd.ArtifactsFile.Filename, pd.ArtifactsFile.Size = dep.Filename, dep.Size
		p.Dependencies = append(p.Dependencies, pd)
	}
	p.Features.TraceSections = true
	p.Features.TokenMaskPrefixes = []string{"glpat-"}
	v := jr.d.ver
	if v.payloadInputs() {
		in := map[string]any{}
		for k, val := range job.Inputs {
			in[k] = val
		}
		p.Inputs = &in
		if v.atLeast(18, 9) {
			p.Run = job.Run
		}
	}
	if v.payload19() {
		pid := jc.pipelineID
		p.JobInfo.PipelineID = &pid
		p.Features.Tracing = json.RawMessage("null")
		if job.Tracing != nil {
			b, err := json.Marshal(job.Tracing)
			if err != nil {
				return nil, err
			}
			p.Features.Tracing = b
		}
		so := map[string]any{}
		p.SuspendOptions = &so
	}
	return json.MarshalIndent(p, "", "  ")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// payloadServices is the payload's services[] (variables only since 19.0).
func (jr *jobRun) payloadServices() []payloadService {
	out := []payloadService{}
	for _, s := range jr.job.Services {
		ps := payloadService{Name: s.Name, Alias: s.Alias, Command: s.Command}
		if jr.d.ver.payload19() {
			for _, v := range s.Variables {
				ps.Variables = append(ps.Variables, payloadVar{Key: v.Key, Value: v.Value, Public: v.Public, File: v.File, Masked: v.Masked, Raw: v.Raw})
			}
		}
		out = append(out, ps)
	}
	return out
}
