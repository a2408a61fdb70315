package stages

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/dotenv"
	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/joblog"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// BenchmarkDotenvPrepare is the time a consumer job's prepare spends on
// dotenv: opening the dir store, reading its dependency's report and
// registering n variables with the job state (env.json).
func BenchmarkDotenvPrepare(b *testing.B) {
	for _, n := range []int{1, 50, 500} {
		b.Run(fmt.Sprintf("vars=%d", n), func(b *testing.B) {
			base := b.TempDir()
			o := &Options{StateDir: filepath.Join(base, "state")}
			saved := dotenvFlags
			defer func() { dotenvFlags = saved }()
			dotenvFlags.store, dotenvFlags.sweepEvery = "dir", 0
			ctx := context.Background()
			store, _ := dotenvstore.NewDir(filepath.Join(o.StateDir, "dotenv"))
			r := &dotenvstore.Report{Expires: time.Now().Add(time.Hour)}
			for i := 0; i < n; i++ {
				r.Vars = append(r.Vars, dotenv.Var{Key: fmt.Sprintf("VAR_%03d", i), Value: "registry.example.com/group/app:90eedc04"})
			}
			if err := store.Put(ctx, dotenvstore.Key{ServerURL: "https://gitlab.example.com", JobID: 701}, r); err != nil {
				b.Fatal(err)
			}
			env := jobenv.FromEnviron([]string{"CUSTOM_ENV_CI_JOB_ID=702", "CUSTOM_ENV_CI_SERVER_URL=https://gitlab.example.com"})
			payload := &jobenv.JobResponse{Dependencies: []jobenv.Dependency{{ID: 701, Name: "kaniko"}}}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				st, err := jobstate.Open(o.StateDir, jobenv.Identity{ID: 702, Token: "glcbt-bench-702", ServerURL: "https://gitlab.example.com"})
				if err != nil {
					b.Fatal(err)
				}
				st.Remove()
				if err := st.Create(); err != nil {
					b.Fatal(err)
				}
				var log bytes.Buffer
				j := &Job{Env: env, Payload: payload, State: st, Log: joblog.New(&log), Options: o}
				b.StartTimer()
				if err := dotenvPrepare(ctx, j); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAddEnvsAsAddEnv: the batch write the dotenv feature uses keeps
// AddEnv's meaning: order of first addition, replacement, secrets recorded.
func TestAddEnvsAsAddEnv(t *testing.T) {
	st, err := jobstate.Open(t.TempDir(), jobenv.Identity{ID: 9, Token: "glcbt-test-9", ServerURL: "https://gitlab.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Create(); err != nil {
		t.Fatal(err)
	}
	if err := st.AddEnv("A", "0", true); err != nil {
		t.Fatal(err)
	}
	if err := st.AddEnvs([]jobstate.EnvVar{{Key: "B", Value: "1"}, {Key: "A", Value: "2"}, {Key: "C", Value: "s3cret-value", Secret: true}}); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Env()
	want := []jobstate.EnvVar{{Key: "A", Value: "2", Secret: true}, {Key: "B", Value: "1"}, {Key: "C", Value: "s3cret-value", Secret: true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("env %v, want %v", got, want)
	}
	sec, _ := st.Secrets()
	if fmt.Sprint(sec) != "[0 s3cret-value]" {
		t.Fatalf("secrets %v", sec)
	}
	if err := st.AddEnvs([]jobstate.EnvVar{{Key: ""}}); err == nil {
		t.Fatal("empty key accepted")
	}
}
