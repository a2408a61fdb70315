package dotenvstore

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/dotenv"
)

func sealed(t *testing.T, k Key, token string) *Report {
	t.Helper()
	r := &Report{Files: []string{"docker.env"}, Vars: []dotenv.Var{{Key: "IMAGE", Value: "reg/app:1"}}, SecretKeys: []string{"IMAGE"},
		Created: time.Now(), Expires: time.Now().Add(time.Hour)}
	if err := Seal(k, r, token); err != nil {
		t.Fatal(err)
	}
	return r
}

// roundTrip is what a store does: JSON out, JSON in.
func roundTrip(t *testing.T, r *Report) *Report {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var out Report
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestVerifyAcceptsOnlyTheProducersReport(t *testing.T) {
	k := key(701)
	good := sealed(t, k, "glcbt-producer")
	if err := roundTrip(t, good).Verify("glcbt-producer", k); err != nil {
		t.Fatalf("genuine report refused: %v", err)
	}
	cases := map[string]struct {
		r     func() *Report
		token string
		want  string
		key   Key
	}{
		"altered value": {r: func() *Report {
			r := roundTrip(t, good)
			r.Vars[0].Value = "evil/app:1"
			return r
		}, token: "glcbt-producer", key: k, want: "MAC"},
		"added variable": {r: func() *Report {
			r := roundTrip(t, good)
			r.Vars = append(r.Vars, dotenv.Var{Key: "LD_PRELOAD", Value: "/tmp/x.so"})
			return r
		}, token: "glcbt-producer", key: k, want: "MAC"},
		"unmasked secret": {r: func() *Report {
			r := roundTrip(t, good)
			r.SecretKeys = nil
			return r
		}, token: "glcbt-producer", key: k, want: "MAC"},
		"forged with another token": {r: func() *Report { return roundTrip(t, sealed(t, k, "glcbt-attacker")) },
			token: "glcbt-producer", key: k, want: "MAC"},
		// A genuine report of job 705 (same name, another pipeline) put
		// where job 701's belongs: sealed with 705's token, checked with 701's.
		"replayed from another pipeline": {r: func() *Report {
			other := key(705)
			other.PipelineID = 99
			return roundTrip(t, sealed(t, other, "glcbt-other-job"))
		}, token: "glcbt-producer", key: k, want: "MAC"},
		"relabelled job id": {r: func() *Report {
			r := roundTrip(t, sealed(t, key(705), "glcbt-producer"))
			return r
		}, token: "glcbt-producer", key: k, want: "report of job 705"},
		"other name": {r: func() *Report {
			k2 := k
			k2.JobName = "build"
			return roundTrip(t, sealed(t, k2, "glcbt-producer"))
		}, token: "glcbt-producer", key: k, want: `named "build"`},
		"unsigned v1": {r: func() *Report {
			r := roundTrip(t, good)
			r.Version, r.MAC = 1, ""
			return r
		}, token: "glcbt-producer", key: k, want: "unsigned"},
		"no token in payload": {r: func() *Report { return roundTrip(t, good) }, token: "", key: k, want: "no token"},
		"garbage MAC": {r: func() *Report {
			r := roundTrip(t, good)
			r.MAC = "zz"
			return r
		}, token: "glcbt-producer", key: k, want: "MAC"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.r().Verify(c.token, c.key)
			if !errors.Is(err, ErrNotAuthentic) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Verify = %v, want ErrNotAuthentic mentioning %q", err, c.want)
			}
		})
	}
}

// The dir store refuses to write reports through a symlink planted where
// its server directory belongs.
func TestDirPutRefusesSymlinkedDir(t *testing.T) {
	root := filepath.Join(t.TempDir(), "dotenv")
	s, _ := NewDir(root)
	k := key(701)
	target := t.TempDir()
	os.MkdirAll(root, 0o700)
	if err := os.Symlink(target, filepath.Join(root, k.ServerHash())); err != nil {
		t.Fatal(err)
	}
	err := s.Put(context.Background(), k, sealed(t, k, "tok"))
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("Put through a symlink: %v", err)
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("report written through the symlink: %v", ents)
	}
}
