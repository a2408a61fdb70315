package jobenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Identity is who a job is, taken from what the job cannot set: the `id`
// and `token` of the runner's job payload (JOB_RESPONSE_FILE) and the GitLab
// instance. A `variables:` entry in .gitlab-ci.yml can give any CUSTOM_ENV_*
// value, CI_JOB_ID and CI_SERVER_URL included (shared/runner-protocol,
// "Job identity"), so none of them names a job.
type Identity struct {
	ID    int64
	Token string
	// ServerURL is the GitLab instance as the runner sees it: the admin's
	// --server-url, else the origin of the payload's git_info.repo_url
	// (GitLab's or the runner's clone URL), else the job's CI_SERVER_URL.
	// It only keeps two instances' job ids apart on one host; what makes a
	// job's state its own is the token, recorded in its state dir.
	ServerURL string
	// ServerFrom says where ServerURL came from ("--server-url",
	// "git_info.repo_url" or "CI_SERVER_URL").
	ServerFrom string
}

// IDString is the job id in decimal.
func (id Identity) IDString() string { return strconv.FormatInt(id.ID, 10) }

// payloadIdentity is the part of the payload Identity needs.
type payloadIdentity struct {
	ID      int64
	Token   string
	RepoURL string
}

// ReadIdentity reads the payload's top-level id and token (and
// git_info.repo_url) without decoding the rest: gitlab-runner writes the
// payload from its JobResponse struct, whose first fields are id, token,
// allow_git_fetch, job_info and git_info, so a streaming decode stops after a
// few hundred bytes of a file that is often tens of kilobytes. When the
// stream is not what that expects (another field order, a syntax error), the
// whole file is decoded instead, so the answer never depends on the shortcut.
//
// A payload with a key twice would give the first value here and the last to
// a full decode; the runner's encoder never writes one, and nothing the job
// controls lands at the top level of the payload.
func ReadIdentity(path string) (id int64, token, repoURL string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", "", fmt.Errorf("ferry: job payload JOB_RESPONSE_FILE: %w", err)
	}
	pi, serr := scanIdentity(f)
	f.Close()
	if serr != nil {
		jr, err := ReadJobResponse(path)
		if err != nil {
			return 0, "", "", err
		}
		pi = payloadIdentity{ID: jr.ID, Token: jr.Token, RepoURL: jr.GitInfo.RepoURL}
	}
	return pi.ID, pi.Token, pi.RepoURL, nil
}

// errIncomplete: the stream ended before id, token and git_info were seen.
var errIncomplete = errors.New("payload identity incomplete")

func scanIdentity(r io.Reader) (payloadIdentity, error) {
	var pi payloadIdentity
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return pi, errIncomplete
	}
	var haveID, haveToken, haveGit bool
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return pi, err
		}
		key, ok := t.(string)
		if !ok {
			return pi, errIncomplete
		}
		switch key {
		case "id":
			if err := dec.Decode(&pi.ID); err != nil {
				return pi, err
			}
			haveID = true
		case "token":
			if err := dec.Decode(&pi.Token); err != nil {
				return pi, err
			}
			haveToken = true
		case "git_info":
			var g struct {
				RepoURL string `json:"repo_url"`
			}
			if err := dec.Decode(&g); err != nil {
				return pi, err
			}
			pi.RepoURL, haveGit = g.RepoURL, true
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return pi, err
			}
		}
		if haveID && haveToken && haveGit {
			return pi, nil
		}
	}
	// The object ended: the fields that are missing are missing, but only a
	// full decode may say so (it also reports syntax errors after them).
	return pi, errIncomplete
}

// Identity returns the job's identity, read once from JOB_RESPONSE_FILE.
// serverURL is the admin's --server-url ("" to derive it).
func (e *Env) Identity(serverURL string) (Identity, error) {
	if e.ident != nil && e.identServer == serverURL {
		return *e.ident, nil
	}
	if e.JobResponseFile == "" {
		return Identity{}, errors.New("ferry: JOB_RESPONSE_FILE is not set: cannot tell which job this is")
	}
	id, token, repo, err := ReadIdentity(e.JobResponseFile)
	if err != nil {
		return Identity{}, err
	}
	if id <= 0 {
		return Identity{}, fmt.Errorf("ferry: job payload JOB_RESPONSE_FILE %s: no job id", e.JobResponseFile)
	}
	if token == "" {
		return Identity{}, fmt.Errorf("ferry: job payload JOB_RESPONSE_FILE %s: no job token", e.JobResponseFile)
	}
	ident := Identity{ID: id, Token: token}
	switch {
	case serverURL != "":
		ident.ServerURL, ident.ServerFrom = strings.TrimRight(serverURL, "/"), "--server-url"
	case httpOrigin(repo) != "":
		ident.ServerURL, ident.ServerFrom = httpOrigin(repo), "git_info.repo_url"
	default:
		v, _ := e.JobVar("CI_SERVER_URL")
		ident.ServerURL, ident.ServerFrom = strings.TrimRight(v, "/"), "CI_SERVER_URL"
	}
	e.ident, e.identServer = &ident, serverURL
	return ident, nil
}

// httpOrigin returns scheme://host[:port] of an http(s) URL, without the
// user info (a clone URL carries gitlab-ci-token:<token>@), or "". Not
// net/url: ferry starts once per stage, and that package's dependencies
// add to every start.
func httpOrigin(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	if !ok || (scheme != "http" && scheme != "https") {
		return ""
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if rest == "" {
		return ""
	}
	return scheme + "://" + strings.ToLower(rest)
}

// IdentityConflicts lists, one "NAME=value (payload: ...)" entry each, the
// job variables that claim another identity than id: CI_JOB_ID, CI_JOB_TOKEN
// (its value is never shown) and CI_SERVER_URL when its origin differs.
// Only the payload is used; the list is for the job log.
func (e *Env) IdentityConflicts(id Identity) []string {
	var out []string
	if v, ok := e.JobVar("CI_JOB_ID"); ok && v != id.IDString() {
		out = append(out, fmt.Sprintf("CI_JOB_ID=%q (payload: %d)", v, id.ID))
	}
	if v, ok := e.JobVar("CI_JOB_TOKEN"); ok && v != id.Token {
		out = append(out, "CI_JOB_TOKEN (not the payload's token)")
	}
	if v, ok := e.JobVar("CI_SERVER_URL"); ok && id.ServerFrom != "CI_SERVER_URL" {
		if o := httpOrigin(v); o != httpOrigin(id.ServerURL) {
			out = append(out, fmt.Sprintf("CI_SERVER_URL=%q (%s: %s)", v, id.ServerFrom, id.ServerURL))
		}
	}
	return out
}

// ReadProjectID reads the payload's job_info.project_id (0 when there is
// none) the way ReadIdentity reads the id: job_info is the runner's fourth
// field, so a streaming decode stops after a few hundred bytes. ferry needs
// it on every stage (the sandbox grants the project's builds_dir), and a
// real payload is tens of kilobytes: decoding all of it cost ~8 ms a stage
// under load. A stream that does not decode falls back to the full decode,
// so its errors are the same.
func ReadProjectID(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("ferry: job payload JOB_RESPONSE_FILE: %w", err)
	}
	id, serr := scanProjectID(f)
	f.Close()
	if serr != nil {
		jr, err := ReadJobResponse(path)
		if err != nil {
			return 0, err
		}
		return jr.JobInfo.ProjectID, nil
	}
	return id, nil
}

// scanProjectID finds job_info.project_id at the top level of r; a payload
// without job_info has none (0). Errors only for what does not decode.
func scanProjectID(r io.Reader) (int64, error) {
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, errIncomplete
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return 0, err
		}
		key, ok := t.(string)
		if !ok {
			return 0, errIncomplete
		}
		if key == "job_info" {
			var ji struct {
				ProjectID int64 `json:"project_id"`
			}
			if err := dec.Decode(&ji); err != nil {
				return 0, err
			}
			return ji.ProjectID, nil
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return 0, err
		}
	}
	// No job_info, but only a full decode may say the rest is valid.
	return 0, errIncomplete
}
