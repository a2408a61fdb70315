package jobstate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
)

func open(t *testing.T, root, id string) *State {
	t.Helper()
	n, _ := strconv.ParseInt(id, 10, 64)
	st, err := Open(root, jobenv.Identity{ID: n, Token: "glcbt-" + id, ServerURL: "https://gitlab.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestKeyAndLayout(t *testing.T) {
	root := t.TempDir()
	st := open(t, root, "42")
	if !strings.HasPrefix(filepath.Base(st.Dir()), Key("https://gitlab.example.com", "")[:8]+"-42") {
		t.Errorf("dir %s", st.Dir())
	}
	if Key("https://a", "1") == Key("https://b", "1") {
		t.Error("two servers share job keys")
	}
	if st.Exists() {
		t.Error("exists before Create")
	}
	if err := st.Create(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{st.Dir(), st.BinDir()} {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, err, fi)
		}
	}
	// A second Create (prepare retried) reuses the dir.
	if err := st.Create(); err != nil {
		t.Errorf("second Create: %v", err)
	}
}

func TestOpenRejectsMissingIdentity(t *testing.T) {
	for _, id := range []jobenv.Identity{{}, {ID: 5}, {Token: "t"}, {ID: -1, Token: "t"}} {
		if _, err := Open(t.TempDir(), id); err == nil || !strings.Contains(err.Error(), "no id or token") {
			t.Errorf("identity %+v: %v", id, err)
		}
	}
}

func TestCreateRefusesSymlink(t *testing.T) {
	root := t.TempDir()
	st := open(t, root, "7")
	os.MkdirAll(filepath.Join(root, "jobs"), 0o700)
	target := t.TempDir()
	if err := os.Symlink(target, st.Dir()); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(); err == nil {
		t.Error("Create followed a symlink planted at the job dir")
	}
}

func TestEnvSecretsCleanup(t *testing.T) {
	st := open(t, t.TempDir(), "1")
	if err := st.Create(); err != nil {
		t.Fatal(err)
	}
	st.AddEnv("A", "1", false)
	st.AddEnv("B", "tok-secret-1", true)
	st.AddEnv("A", "2", false)
	vars, err := st.Env()
	if err != nil || len(vars) != 2 || vars[0] != (EnvVar{"A", "2", false}) || vars[1] != (EnvVar{"B", "tok-secret-1", true}) {
		t.Errorf("env %v %v", vars, err)
	}
	st.AddSecrets("s1", "", "s1", "s2")
	sec, _ := st.Secrets()
	if strings.Join(sec, ",") != "tok-secret-1,s1,s2" {
		t.Errorf("secrets %v", sec)
	}
	st.AddCleanupPath("rel/path")
	cp, _ := st.CleanupPaths()
	if len(cp) != 1 || !filepath.IsAbs(cp[0]) {
		t.Errorf("cleanup paths %v", cp)
	}
	for _, f := range []string{EnvFile, SecretsFile, CleanupFile, MetaFile} {
		fi, err := os.Stat(st.Path(f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, err, fi)
		}
	}
	// No temp files left behind by the atomic writes.
	ents, _ := os.ReadDir(st.Dir())
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("leftover %s", e.Name())
		}
	}
	if err := st.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestSweepStale(t *testing.T) {
	root := t.TempDir()
	mk := func(name string, age time.Duration, timeout int64, meta bool) string {
		d := filepath.Join(root, "jobs", name)
		os.MkdirAll(d, 0o700)
		if meta {
			b, _ := json.Marshal(Meta{Created: time.Now().Add(-age), TimeoutSeconds: timeout})
			os.WriteFile(filepath.Join(d, MetaFile), b, 0o600)
		} else {
			old := time.Now().Add(-age)
			os.Chtimes(d, old, old)
		}
		return d
	}
	old := mk("a-1", 30*time.Hour, 3600, true)
	fresh := mk("a-2", time.Hour, 3600, true)
	long := mk("a-3", 30*time.Hour, 2*24*3600, true) // 2-day timeout: may still run
	noMeta := mk("a-4", 30*time.Hour, 0, false)
	removed, err := SweepStale(root, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 {
		t.Errorf("removed %v", removed)
	}
	for _, d := range []string{old, noMeta} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s not swept", d)
		}
	}
	for _, d := range []string{fresh, long} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s swept: %v", d, err)
		}
	}
	if r, err := SweepStale(filepath.Join(root, "missing"), time.Hour); err != nil || r != nil {
		t.Errorf("missing root: %v %v", r, err)
	}
}
