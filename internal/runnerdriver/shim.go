package runnerdriver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

var (
	shimOnce sync.Once
	shimPath string
	shimErr  error
)

// moduleRoot finds the ferry module's root from this source file.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("runnerdriver: cannot locate the source tree")
	}
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("runnerdriver: module root not found from %s: %w", file, err)
	}
	return root, nil
}

// ShimVar names a prebuilt gitlab-runner shim (internal/glshim) that the
// driver uses instead of building one from the source tree: asuser sets it
// for the as-user child, which cannot count on reading the checkout (a clone
// under root's 0700 home) nor on a Go build cache of its own.
const ShimVar = "FERRY_GLSHIM"

// BuildShim builds internal/glshim once per process (or returns $FERRY_GLSHIM)
// and returns its path.
func BuildShim() (string, error) { return buildShim() }

// buildShim builds internal/glshim once per process.
func buildShim() (string, error) {
	if p := os.Getenv(ShimVar); p != "" {
		return p, nil
	}
	shimOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			shimErr = err
			return
		}
		// One file per user and source tree, replaced (rename) by every
		// process that builds it, rather than a temporary directory per
		// process that nothing could remove: the driver's jobs run the shim
		// until the last one ends, after the process that built it.
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("ferry-glshim-%d", os.Getuid()))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			shimErr = fmt.Errorf("runnerdriver: %w", err)
			return
		}
		sum := sha256.Sum256([]byte(root))
		out := filepath.Join(dir, "glshim-"+hex.EncodeToString(sum[:4]))
		tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
		// -buildvcs=false: a test may build it as another user than the
		// checkout's owner, and git then refuses the VCS stamp (CI clones
		// as root, the isolation tests run the driver as a runner user).
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", tmp, "./internal/runnerdriver/internal/glshim")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			shimErr = fmt.Errorf("runnerdriver: building the gitlab-runner shim: %w: %s", err, b)
			return
		}
		if err := os.Rename(tmp, out); err != nil {
			os.Remove(tmp)
			shimErr = fmt.Errorf("runnerdriver: %w", err)
			return
		}
		shimPath = out
	})
	return shimPath, shimErr
}

// installShim puts a `gitlab-runner` executable in the driver's shim dir: a
// two-line wrapper that hands the built shim its configuration.
func (d *Driver) installShim() error {
	bin := d.cfg.ShimBinary
	if bin == "" {
		var err error
		if bin, err = buildShim(); err != nil {
			return err
		}
	}
	d.shimBin = bin
	cfg := map[string]any{
		"store":         d.store,
		"gitlab_dotenv": d.cfg.GitLabDotenv,
		"max_variables": d.cfg.DotenvMaxVariables,
		"version":       d.cfg.RunnerVersion,
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("runnerdriver: %w", err)
	}
	cfgFile := filepath.Join(d.shimDir, "shim.json")
	if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
		return fmt.Errorf("runnerdriver: %w", err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nexec %s --ferry-driver-config %s \"$@\"\n", shellEscape(bin), shellEscape(cfgFile))
	if err := os.WriteFile(filepath.Join(d.shimDir, "gitlab-runner"), []byte(wrapper), 0o755); err != nil {
		return fmt.Errorf("runnerdriver: %w", err)
	}
	return nil
}

// storedArtifacts lists what the shim stored for a job.
func (d *Driver) storedArtifacts(id int) []StoredArtifact {
	jobDir := filepath.Join(d.store, fmt.Sprint(id))
	metas, _ := filepath.Glob(filepath.Join(jobDir, "*.json"))
	sort.Strings(metas)
	var out []StoredArtifact
	for _, m := range metas {
		if filepath.Base(m) == "dotenv-variables.json" {
			continue
		}
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var meta struct {
			Type   string   `json:"type"`
			Format string   `json:"format"`
			Paths  []string `json:"paths"`
		}
		if json.Unmarshal(b, &meta) != nil {
			continue
		}
		out = append(out, StoredArtifact{Type: meta.Type, Format: meta.Format, Paths: meta.Paths,
			Dir: filepath.Join(jobDir, strings.TrimSuffix(filepath.Base(m), ".json"))})
	}
	return out
}

// storedDotenv is what GitLab parsed from the job's dotenv report.
func (d *Driver) storedDotenv(id int) []Variable {
	b, err := os.ReadFile(filepath.Join(d.store, fmt.Sprint(id), "dotenv-variables.json"))
	if err != nil {
		return nil
	}
	var vars []struct{ Key, Value string }
	if json.Unmarshal(b, &vars) != nil {
		return nil
	}
	out := make([]Variable, 0, len(vars))
	for _, v := range vars {
		// Dotenv variables are never masked and reach the runner non-raw.
		out = append(out, Variable{Key: v.Key, Value: v.Value})
	}
	return out
}
