package kubecreds

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// dirState is a minimal jobstate stand-in over a real directory.
type dirState struct {
	dir      string
	env      map[string]string
	secrets  []string
	cleanups []string
}

func (s *dirState) Path(n string) string { return filepath.Join(s.dir, n) }
func (s *dirState) AddEnv(k, v string, secret bool) error {
	if secret {
		return fmt.Errorf("unexpected secret env %s", k)
	}
	s.env[k] = v
	return nil
}
func (s *dirState) AddSecrets(v ...string) error  { s.secrets = append(s.secrets, v...); return nil }
func (s *dirState) AddCleanupPath(p string) error { s.cleanups = append(s.cleanups, p); return nil }

type textLog struct{ strings.Builder }

func (l *textLog) Section(name, header string, collapsed bool) func() {
	fmt.Fprintf(l, "[%s] %s\n", name, header)
	return func() { fmt.Fprintf(l, "[/%s]\n", name) }
}
func (l *textLog) Infof(f string, a ...any)   { fmt.Fprintf(l, f+"\n", a...) }
func (l *textLog) Noticef(f string, a ...any) { fmt.Fprintf(l, f+"\n", a...) }
func (l *textLog) Warnf(f string, a ...any)   { fmt.Fprintf(l, "WARN "+f+"\n", a...) }

func unreachable(t *testing.T) string {
	return strings.Replace(readKubeconfig(t, "sa-token.yaml"), "https://127.0.0.1:6443", "https://127.0.0.1:1", 1)
}

func TestSetupNothingWithoutVariables(t *testing.T) {
	st := &dirState{dir: t.TempDir(), env: map[string]string{}}
	var log textLog
	if err := Setup(context.Background(), Input{Vars: map[string]string{"CI": "true"}}, DefaultOptions(), st, &log, "/b/p"); err != nil {
		t.Fatal(err)
	}
	if log.Len() != 0 || len(st.env)+len(st.secrets) != 0 {
		t.Fatalf("log %q env %v", log.String(), st.env)
	}
}

func TestSetupSeedScriptKeepsVariable(t *testing.T) {
	st := &dirState{dir: t.TempDir(), env: map[string]string{}}
	var log textLog
	value := base64.StdEncoding.EncodeToString([]byte(unreachable(t)))
	in := Input{Vars: map[string]string{"KUBECONFIG": value}, Scripts: []string{
		"echo $KUBECONFIG | base64 --decode > kubeconfig", "export KUBECONFIG=$(pwd)/kubeconfig", "kubectl apply -f deployment.yml",
	}}
	opt := DefaultOptions()
	opt.PreflightTimeout = time.Second
	err := Setup(context.Background(), in, opt, st, &log, "/b/p")
	wantBuildError(t, err, "cannot reach") // the secrets are registered anyway
	if len(st.env) != 0 {
		t.Fatalf("overrode %v although the script decodes the variable", st.env)
	}
	if len(st.cleanups) != 1 || st.cleanups[0] != "/b/p/kubeconfig" {
		t.Fatalf("cleanups %q", st.cleanups)
	}
	if !contains(st.secrets, value) || !contains(st.secrets, saToken) {
		t.Fatal("secrets not registered")
	}
	for _, want := range []string{"can be deleted", "  echo $KUBECONFIG | base64 --decode > kubeconfig", "  export KUBECONFIG=$(pwd)/kubeconfig"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	if _, err := os.Stat(st.Path(jobstate.KubeconfigFile)); err == nil {
		t.Error("wrote a kubeconfig nobody uses")
	}
}

func TestSetupWritesKubeconfig(t *testing.T) {
	st := &dirState{dir: t.TempDir(), env: map[string]string{}}
	var log textLog
	opt := DefaultOptions()
	opt.PreflightTimeout = time.Second
	in := Input{Vars: map[string]string{"KUBECONFIG": readKubeconfig(t, "agent.yaml")}, FileVars: map[string]bool{"KUBECONFIG": true},
		Scripts: []string{"kubectl config use-context group/agents:prod"}}
	if err := Setup(context.Background(), in, opt, st, &log, "/b/p"); err != nil {
		t.Fatal(err)
	}
	if st.env["KUBECONFIG"] != st.Path(jobstate.KubeconfigFile) {
		t.Fatalf("env %v", st.env)
	}
	data, err := os.ReadFile(st.Path(jobstate.KubeconfigFile))
	if err != nil || !strings.Contains(string(data), "group/agents:staging") {
		t.Fatalf("kubeconfig: %v\n%s", err, data)
	}
	if len(st.cleanups) != 1 || st.cleanups[0] != "/b/p.tmp/KUBECONFIG" {
		t.Fatalf("File variable copy not cleaned up: %q", st.cleanups)
	}
	if strings.Contains(log.String(), "glcbt-agentjobtoken") {
		t.Fatal("token in log")
	}
}
