package kubecreds

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// State is the part of the job state directory (jobstate.State) Setup uses.
type State interface {
	Path(name string) string
	AddEnv(key, value string, secret bool) error
	AddSecrets(values ...string) error
	AddCleanupPath(p string) error
}

// Logger is the part of the job log (joblog.Logger) Setup uses.
type Logger interface {
	Section(name, header string, collapsed bool) func()
	Infof(format string, args ...any)
	Noticef(format string, args ...any)
	Warnf(format string, args ...any)
}

// Setup is the whole prepare-time work for a job: load and check the
// credentials, register their secrets, write the job's kubeconfig into the
// state directory and point the job's KUBECONFIG at it (unless the job's
// script decodes the variable itself), and check the credentials against
// the API server. projectDir is CI_PROJECT_DIR. A job without Kubernetes
// variables gets nothing, silently.
func Setup(ctx context.Context, in Input, opt Options, st State, log Logger, projectDir string) error {
	c, err := Load(in, opt)
	if err != nil {
		return err
	}
	if w := emptyVariableWarning(in, opt, c); w != "" {
		log.Warnf("%s", w)
	}
	if c == nil {
		return nil
	}
	// Secrets first: whatever happens next, ferry run masks them.
	if err := st.AddSecrets(c.Secrets...); err != nil {
		return fmt.Errorf("ferry: kubernetes credentials: %w", err)
	}
	start := time.Now()
	end := log.Section("ferry_kubernetes", "Kubernetes credentials from "+c.Source, true)
	defer end()
	for _, w := range c.Warnings {
		log.Warnf("%s", w)
	}
	cleanups := c.Script.CleanupPaths(projectDir)
	if in.FileVars[c.Variable] && projectDir != "" {
		// The runner's stage scripts write a File variable to
		// <CI_PROJECT_DIR>.tmp/<KEY> (world-readable) and only remove it
		// when cleanup_file_variables runs, which a killed job skips.
		cleanups = append(cleanups, filepath.Join(filepath.Clean(projectDir)+".tmp", c.Variable))
	}
	for _, p := range cleanups {
		if err := st.AddCleanupPath(p); err != nil {
			return fmt.Errorf("ferry: kubernetes credentials: %w", err)
		}
	}
	if c.Script.Decodes {
		log.Infof("The job's script decodes %s itself, so ferry leaves %s as it is.", c.Variable, c.Variable)
		if paths := c.Script.CleanupPaths(projectDir); len(paths) > 0 {
			log.Infof("ferry removes the decoded copy at cleanup: %s", strings.Join(paths, ", "))
		}
	} else {
		// In a dir of its own: client-go writes <kubeconfig>.lock beside it
		// (kubectl config set-cluster, use-context), and the job sandbox
		// lets the job write this dir, never the job state dir itself.
		path := st.Path(jobstate.KubeconfigFile)
		if err := c.WriteFile(path); err != nil {
			return err
		}
		// Not secret: the path is not, and only non-secret values may go
		// where they override the job variable (ARCHITECTURE: override).
		if err := st.AddEnv("KUBECONFIG", path, false); err != nil {
			return fmt.Errorf("ferry: kubernetes credentials: %w", err)
		}
		log.Infof("KUBECONFIG points to a private kubeconfig outside the build directory, removed at cleanup.")
	}
	if len(c.Script.Redundant) > 0 {
		log.Noticef("ferry does this for the job; these lines of the job's script can be deleted:")
		for _, l := range c.Script.Redundant {
			log.Infof("  %s", l)
		}
	}
	if c.NeedsContext {
		log.Infof("No context selected; the job's script selects one (kubectl config use-context), so ferry does not check the credentials now.")
		return nil
	}
	id, err := Preflight(ctx, c, opt.PreflightTimeout)
	if err != nil {
		return err
	}
	log.Noticef("%s", id)
	log.Infof("Checked in %s.", time.Since(start).Round(time.Millisecond))
	return nil
}

// emptyVariableWarning is the one line prepare prints when the kubeconfig
// variable is set but empty or only white space: Load treats it as unset,
// and without this line the job's first kubectl error talks about
// KUBERNETES_MASTER, far from the cause. c is what Load found instead.
func emptyVariableWarning(in Input, opt Options, c *Creds) string {
	name := opt.variable()
	v, ok := in.Vars[name]
	if !ok || strings.TrimSpace(v) != "" || !opt.enabled(SourceKubeconfig) {
		return ""
	}
	kind := "variable"
	if in.FileVars[name] {
		kind = "File variable"
	}
	what := "empty"
	if v != "" {
		what = "only white space"
	}
	if c != nil {
		return fmt.Sprintf("ferry: %s: the %s is %s; using %s instead", name, kind, what, c.Source)
	}
	return fmt.Sprintf("ferry: %s: the %s is %s, so this job gets no Kubernetes credentials (kubectl will find no cluster); set it to a kubeconfig (YAML or base64) or remove it", name, kind, what)
}

// ParseSources reads the --kube-sources flag value.
func ParseSources(v string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case "":
		case SourceKubeconfig, SourceClusterVars:
			out = append(out, s)
		case "none":
			out = append(out, "none")
		default:
			return nil, fmt.Errorf("ferry: --kube-sources: unknown source %q (want %s, %s or none)", s, SourceKubeconfig, SourceClusterVars)
		}
	}
	if out == nil {
		out = []string{"none"}
	}
	return out, nil
}
