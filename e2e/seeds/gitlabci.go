package seeds

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"sigs.k8s.io/yaml"

	rd "gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// The subset of .gitlab-ci.yml the seed pipelines use. The tests run the
// scripts of the very files docs/seeds.md shows, so a loader that read them
// loosely could let the docs and the tests drift apart: an unknown key is an
// error, and keys the driver cannot model are listed (and ignored) here.
type ciJob struct {
	Stage        string            `json:"stage"`
	Script       []string          `json:"script"`
	BeforeScript []string          `json:"before_script"`
	AfterScript  []string          `json:"after_script"`
	Variables    map[string]string `json:"variables"`
	Needs        *[]ciNeed         `json:"needs"`
	Dependencies *[]string         `json:"dependencies"`
	When         string            `json:"when"`
	AllowFailure bool              `json:"allow_failure"`
	Artifacts    *struct {
		Paths    []string `json:"paths"`
		ExpireIn string   `json:"expire_in"`
		Reports  struct {
			Dotenv stringList `json:"dotenv"`
		} `json:"reports"`
	} `json:"artifacts"`

	// Not modelled by the driver: tags pick the runner (ferry's, here), only
	// and environment do not change what the job runs.
	Tags        []string        `json:"tags"`
	Only        json.RawMessage `json:"only"`
	Environment json.RawMessage `json:"environment"`
}

// ciNeed is `- job: docker` + `artifacts: bool`, or a bare job name.
type ciNeed struct {
	Job       string `json:"job"`
	Artifacts *bool  `json:"artifacts"`
}

func (n *ciNeed) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &n.Job)
	}
	type plain ciNeed
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode((*plain)(n))
}

// stringList is a YAML string or list of strings.
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = []string{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(s))
}

var topKey = regexp.MustCompile(`^([A-Za-z0-9_.-]+):`)

// LoadCI reads dir/.gitlab-ci.yml into the jobs of a driver pipeline (in
// file order), with dir as the commit every job checks out. Top-level
// `variables` become the pipeline's; project variables are the caller's.
func LoadCI(dir string) (rd.Pipeline, error) {
	file := filepath.Join(dir, ".gitlab-ci.yml")
	src, err := os.ReadFile(file)
	if err != nil {
		return rd.Pipeline{}, fmt.Errorf("seeds: %w", err)
	}
	var top map[string]json.RawMessage
	if err := yaml.Unmarshal(src, &top); err != nil {
		return rd.Pipeline{}, fmt.Errorf("seeds: %s: %w", file, err)
	}
	p := rd.Pipeline{SourceDir: dir}
	if raw, ok := top["stages"]; ok {
		if err := json.Unmarshal(raw, &p.Stages); err != nil {
			return rd.Pipeline{}, fmt.Errorf("seeds: %s: stages: %w", file, err)
		}
	}
	if raw, ok := top["variables"]; ok {
		var vars map[string]string
		if err := json.Unmarshal(raw, &vars); err != nil {
			return rd.Pipeline{}, fmt.Errorf("seeds: %s: variables: %w", file, err)
		}
		p.Variables = sortedVars(vars)
	}
	// The YAML decoder forgets key order; jobs keep the file's, as GitLab
	// lists them (the driver runs a stage's jobs in that order).
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		m := topKey.FindStringSubmatch(sc.Text())
		if m == nil || m[1] == "stages" || m[1] == "variables" {
			continue
		}
		name := m[1]
		raw, ok := top[name]
		if !ok {
			continue
		}
		job, err := decodeJob(name, raw)
		if err != nil {
			return rd.Pipeline{}, fmt.Errorf("seeds: %s: %w", file, err)
		}
		p.Jobs = append(p.Jobs, job)
	}
	if len(p.Jobs) == 0 {
		return rd.Pipeline{}, fmt.Errorf("seeds: %s: no jobs", file)
	}
	return p, nil
}

func decodeJob(name string, raw json.RawMessage) (rd.Job, error) {
	var cj ciJob
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cj); err != nil {
		return rd.Job{}, fmt.Errorf("job %s: %w", name, err)
	}
	if len(cj.Script) == 0 {
		return rd.Job{}, fmt.Errorf("job %s: no script", name)
	}
	j := rd.Job{
		Name: name, Stage: cj.Stage,
		Script: cj.Script, BeforeScript: cj.BeforeScript, AfterScript: cj.AfterScript,
		Variables: sortedVars(cj.Variables),
		When:      cj.When, AllowFailure: cj.AllowFailure,
	}
	if cj.Needs != nil {
		j.Needs = []rd.Need{} // `needs: []` differs from no needs
		for _, n := range *cj.Needs {
			j.Needs = append(j.Needs, rd.Need{Job: n.Job, SkipArtifacts: n.Artifacts != nil && !*n.Artifacts})
		}
	}
	if cj.Dependencies != nil {
		j.Dependencies = append([]string{}, *cj.Dependencies...)
	}
	if a := cj.Artifacts; a != nil {
		if len(a.Paths) > 0 {
			j.Artifacts = append(j.Artifacts, rd.Artifact{Paths: a.Paths, ExpireIn: a.ExpireIn})
		}
		for _, f := range a.Reports.Dotenv {
			da := rd.DotenvReport(f)
			if a.ExpireIn != "" {
				da.ExpireIn = a.ExpireIn
			}
			j.Artifacts = append(j.Artifacts, da)
		}
	}
	return j, nil
}

// sortedVars turns a YAML variables map into driver variables in a stable
// order, so payloads are the same from run to run.
func sortedVars(m map[string]string) []rd.Variable {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []rd.Variable
	for _, k := range keys {
		out = append(out, rd.Variable{Key: k, Value: m[k], Public: true})
	}
	return out
}
