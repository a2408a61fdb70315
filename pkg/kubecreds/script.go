package kubecreds

import (
	"path/filepath"
	"regexp"
	"strings"
)

// ScriptUse is what the job's own commands do with the credentials.
type ScriptUse struct {
	// Decodes is set when a command decodes the kubeconfig variable itself
	// (`echo $KUBECONFIG | base64 --decode > kubeconfig`). Such a job needs
	// the variable to keep its value, so ferry does not point KUBECONFIG at
	// its own file.
	Decodes bool
	// Redundant are the command lines ferry makes unnecessary, quoted as
	// written: the decode lines, the `export KUBECONFIG=...` lines, and the
	// `kubectl config set-cluster/set-credentials/set-context/use-context`
	// lines that rebuild a kubeconfig from KUBE_URL/KUBE_TOKEN.
	Redundant []string
	// Paths are the files the decode lines write, as written in the script.
	Paths []string
	// SelectsContext is set when a command selects a context itself.
	SelectsContext bool
}

var (
	reBase64Decode = regexp.MustCompile(`\bbase64\b[^|;&]*?(\s-[a-zA-Z]*[dD][a-zA-Z]*\b|\s--decode\b)`)
	reRedirect     = regexp.MustCompile(`(?:>>?|\btee(?:\s+-a)?)\s*("[^"]*"|'[^']*'|[^\s;&|<>]+)`)
	reUseContext   = regexp.MustCompile(`\bkubectl\s+config\s+use-context\b`)
	reKubeSetup    = regexp.MustCompile(`\bkubectl\s+config\s+(set-cluster|set-credentials|set-context|use-context)\b`)
)

// refersTo matches $NAME and ${NAME} (not $NAME_OTHER).
func refersTo(line, name string) bool {
	re := regexp.MustCompile(`\$(\{` + regexp.QuoteMeta(name) + `\}|` + regexp.QuoteMeta(name) + `\b)`)
	return re.MatchString(line)
}

// DetectScript looks at the job's command lines for the usual ways existing
// pipelines decode a kubeconfig variable named name, or build one.
func DetectScript(lines []string, name string) ScriptUse {
	var u ScriptUse
	var exports []string
	for _, raw := range lines {
		for _, line := range strings.Split(raw, "\n") {
			t := strings.TrimSpace(line)
			if t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			if reUseContext.MatchString(t) || strings.Contains(t, "--context") {
				u.SelectsContext = true
			}
			switch {
			case refersTo(t, name) && reBase64Decode.MatchString(t):
				u.Decodes = true
				u.Redundant = append(u.Redundant, t)
				for _, m := range reRedirect.FindAllStringSubmatch(t, -1) {
					p := strings.Trim(m[1], `"'`)
					if p != "" && p != "/dev/null" && !strings.HasPrefix(p, "&") {
						u.Paths = append(u.Paths, p)
					}
				}
			case strings.HasPrefix(t, "export "+name+"=") || strings.HasPrefix(t, name+"="):
				exports = append(exports, t)
			case reKubeSetup.MatchString(t) && (refersTo(t, "KUBE_URL") || refersTo(t, "KUBE_TOKEN") || refersTo(t, "KUBE_CA_PEM_FILE") || refersTo(t, "KUBE_CA_PEM") || strings.Contains(t, "use-context")):
				u.Redundant = append(u.Redundant, t)
			}
		}
	}
	// `export KUBECONFIG=$(pwd)/kubeconfig` only goes with a decode line.
	if u.Decodes {
		u.Redundant = append(u.Redundant, exports...)
	}
	return u
}

// CleanupPaths resolves the decoded-copy paths against the project directory
// (where the job's commands start). Only paths that resolve inside the
// project directory are returned: a path ferry cannot resolve for sure
// ($HOME, a variable, ~) is left alone rather than guessed at.
func (u ScriptUse) CleanupPaths(projectDir string) []string {
	if projectDir == "" {
		return nil
	}
	projectDir = filepath.Clean(projectDir)
	var out []string
	for _, p := range u.Paths {
		for _, v := range []string{"${CI_PROJECT_DIR}", "$CI_PROJECT_DIR", "$(pwd)", "${PWD}", "$PWD", "`pwd`"} {
			p = strings.ReplaceAll(p, v, projectDir)
		}
		if strings.ContainsAny(p, "$`~*?") {
			continue
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(projectDir, p)
		}
		p = filepath.Clean(p)
		if rel, err := filepath.Rel(projectDir, p); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		out = append(out, p)
	}
	return out
}
