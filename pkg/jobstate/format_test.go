package jobstate

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/version"
)

func writeMeta(t *testing.T, st *State, m map[string]any) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := os.WriteFile(st.Path(MetaFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// State written by a ferry before format versions is read; state of a
// newer format (a downgrade while the job ran) is refused with one line
// naming the dir, the writer, both formats and what to do.
func TestStateFormat(t *testing.T) {
	root := t.TempDir()
	st := open(t, root, "7")
	if err := st.CheckFormat(); err != nil {
		t.Fatalf("no state yet: %v", err)
	}
	if err := st.Create(); err != nil {
		t.Fatal(err)
	}
	m, err := st.Meta()
	if err != nil || m.Format != Format || m.Ferry != version.Version {
		t.Fatalf("meta %+v %v: want format %d by ferry %s", m, err, Format, version.Version)
	}

	// meta.json as ferry wrote it before format versions.
	writeMeta(t, st, map[string]any{"created": "2026-01-01T00:00:00Z", "job_id": "7", "timeout_seconds": 3600})
	if err := st.CheckFormat(); err != nil {
		t.Errorf("pre-version state refused: %v", err)
	}
	if err := st.AddEnv("K", "v", false); err != nil {
		t.Fatal(err)
	}

	writeMeta(t, st, map[string]any{"created": "2026-01-01T00:00:00Z", "job_id": "7", "format": Format + 1, "ferry": "9.9.9"})
	err = st.CheckFormat()
	if err == nil {
		t.Fatal("newer state format accepted")
	}
	for _, want := range []string{st.Dir(), "ferry 9.9.9", "state format 2", "reads formats up to 1", "retry the job"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	// A retried prepare does not take it over either.
	if err := st.Create(); err == nil || !strings.Contains(err.Error(), "state format 2") {
		t.Errorf("Create over a newer format: %v", err)
	}
}

// prepare does not take over a dir it did not write: one left by a ferry
// before format versions or token hashes (or planted by another project's
// job while jobs could still write the state root) is emptied first, so its
// env.json and cleanup.json never reach the new job.
func TestCreateEmptiesUnversionedDir(t *testing.T) {
	for name, meta := range map[string]map[string]any{
		"pre-version": {"created": "2026-01-01T00:00:00Z", "job_id": "8"},
		"no-token":    {"created": "2026-01-01T00:00:00Z", "job_id": "8", "format": Format, "ferry": "x"},
		"no-meta":     nil,
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			planted := open(t, root, "8")
			if err := os.MkdirAll(planted.BinDir(), 0o700); err != nil {
				t.Fatal(err)
			}
			if meta != nil {
				writeMeta(t, planted, meta)
			}
			if err := planted.AddEnv("LD_PRELOAD", "/tmp/planted.so", false); err != nil {
				t.Fatal(err)
			}
			if err := planted.AddCleanupPath(t.TempDir()); err != nil {
				t.Fatal(err)
			}
			st := open(t, root, "8")
			if err := st.Create(); err != nil {
				t.Fatal(err)
			}
			if env, _ := st.Env(); len(env) != 0 {
				t.Errorf("planted overrides reached the new job: %v", env)
			}
			if paths, _ := st.CleanupPaths(); len(paths) != 0 {
				t.Errorf("planted cleanup paths reached the new job: %v", paths)
			}
			if m, err := st.Meta(); err != nil || m.Format != Format || m.TokenSHA256 == "" {
				t.Errorf("meta after Create: %+v %v", m, err)
			}
			// The job's own dir (a retried prepare) is reused as it is.
			if err := st.AddEnv("KEPT", "1", false); err != nil {
				t.Fatal(err)
			}
			if err := st.Create(); err != nil {
				t.Fatal(err)
			}
			if env, _ := st.Env(); len(env) != 1 {
				t.Errorf("a retried prepare lost its own state: %v", env)
			}
		})
	}
}
