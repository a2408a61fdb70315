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
	return refRe(name).MatchString(line)
}

func refRe(name string) *regexp.Regexp {
	return regexp.MustCompile(`\$(\{` + regexp.QuoteMeta(name) + `\}|` + regexp.QuoteMeta(name) + `\b)`)
}

// DetectScript looks at the job's command lines for the usual ways existing
// pipelines decode a kubeconfig variable named name, or build one. A line
// that decodes what the variable's file holds (`sed ... "$KUBECONFIG" |
// base64 -d`) reads the kubeconfig ferry wrote and is not taken for a decode;
// see detectScript.
func DetectScript(lines []string, name string) ScriptUse {
	return detectScript(lines, name, false)
}

// detectScript is DetectScript; fileHoldsBase64 says the variable is a File
// variable whose content is base64, so that a line decoding the whole file it
// names ($KUBECONFIG as a path) decodes the variable itself.
//
// Taking a line for a decode makes ferry leave the variable as it is, which
// breaks every later command if the guess is wrong. So a line counts only
// when it clearly decodes the variable's value into a file: the value is
// given as data (`echo`/`printf` arguments or a `<<<` here-string), or, for a
// File variable of base64, the whole file goes into base64 (`cat`, base64's
// own argument or input), and the decoded output is written somewhere (`>`,
// `>>`, `tee`). When unsure, ferry's kubeconfig stays.
func detectScript(lines []string, name string, fileHoldsBase64 bool) ScriptUse {
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
			case decodesVariable(t, name, fileHoldsBase64):
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

// decodesVariable reports whether the command line t decodes the value of
// the variable name into a file (see detectScript).
func decodesVariable(t, name string, fileHoldsBase64 bool) bool {
	dec := reBase64Decode.FindStringIndex(t)
	if dec == nil || !refersTo(t, name) {
		return false
	}
	// The decoded output must go to a file: a decode piped into grep or
	// captured in $(...) does not make the job's kubeconfig.
	written := false
	for _, m := range reRedirect.FindAllStringSubmatchIndex(t, -1) {
		p := strings.Trim(t[m[2]:m[3]], `"'`)
		if m[1] > dec[0] && p != "/dev/null" && !strings.HasPrefix(p, "&") {
			written = true
		}
	}
	if !written {
		return false
	}
	asValue, asFile := false, false
	for _, m := range refRe(name).FindAllStringIndex(t, -1) {
		prefix := t[:m[0]]
		switch w := commandWord(prefix); {
		case w == "echo" || w == "printf" || strings.HasSuffix(strings.TrimRight(prefix, " \t\"'"), "<<<"):
			asValue = true
		case w == "cat" || w == "base64":
			// The whole file, as is, into base64. sed, grep, awk or yq
			// pick fields out of a YAML kubeconfig: ferry's file.
			asFile = true
		}
	}
	return asValue || (asFile && fileHoldsBase64)
}

// commandWord is the command of the simple command that prefix (a line up
// to a variable reference) ends in: the first word after the last operator
// or opening bracket, past VAR=value assignments, without a directory.
func commandWord(prefix string) string {
	cmd := prefix[strings.LastIndexAny(prefix, "|;&(`{")+1:]
	for _, w := range strings.Fields(cmd) {
		if strings.Contains(w, "=") && !strings.HasPrefix(w, "-") {
			continue
		}
		w = strings.Trim(w, `"'`)
		return w[strings.LastIndex(w, "/")+1:]
	}
	return ""
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
