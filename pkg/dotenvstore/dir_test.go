package dotenvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/dotenv"
)

// writerEnv makes the test binary a writer process (see TestMain): it
// stores ever new, large reports of one job until it is killed.
const writerEnv = "FERRY_DOTENVSTORE_TEST_WRITER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(writerEnv); dir != "" {
		writerLoop(dir)
		return
	}
	os.Exit(m.Run())
}

func writerLoop(root string) {
	s, _ := NewDir(root)
	k := Key{ServerURL: "https://gitlab.example.com", ProjectID: 1, PipelineID: 1, JobID: 7}
	big := strings.Repeat("x", 4<<20) // a write that takes a while
	for i := 0; ; i++ {
		r := &Report{Vars: []dotenv.Var{{Key: "SEQ", Value: strconv.Itoa(i)}, {Key: "BIG", Value: big}, {Key: "END", Value: strconv.Itoa(i)}}}
		if err := s.Put(context.Background(), k, r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		fmt.Println(i) // the parent counts finished writes
	}
}

func key(job int64) Key {
	return Key{ServerURL: "https://gitlab.example.com", ProjectID: 42, PipelineID: job / 10, JobID: job, JobName: "kaniko"}
}

func TestDirPutGet(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "dotenv")
	s, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, key(701)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty store: %v", err)
	}
	in := &Report{Files: []string{"docker.env"},
		Vars: []dotenv.Var{{Key: "IMAGE", Value: "reg/app:1"}, {Key: "Q", Value: `"x y"`}}, SecretKeys: []string{"Q"},
		Expires: time.Now().Add(time.Hour).UTC().Round(0)}
	if err := Seal(key(701), in, "tok"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, key(701), in); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, key(701))
	if err != nil {
		t.Fatal(err)
	}
	if got.JobName != "kaniko" || got.PipelineID != 70 || got.Vars[1].Value != `"x y"` || got.SecretKeys[0] != "Q" || !got.Expires.Equal(in.Expires) || got.Verify("tok", key(701)) != nil {
		t.Fatalf("got %+v", got)
	}
	// Another instance with the same job id is another report.
	other := key(701)
	other.ServerURL = "https://gitlab.other.example"
	if _, err := s.Get(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other instance: %v", err)
	}
	// Modes: dirs 0700, files 0600.
	p := s.path(key(701))
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{root, 0o700}, {filepath.Dir(p), 0o700}, {p, 0o600}} {
		info, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, info.Mode().Perm(), c.mode)
		}
	}
	// An expired report is not served.
	in.Expires = time.Now().Add(-time.Second)
	if err := s.Put(ctx, key(702), in); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, key(702)); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: %v", err)
	}
	if err := s.Put(ctx, Key{ServerURL: "x"}, in); err == nil {
		t.Fatal("Put without a job id")
	}
}

// TestDirConcurrentPipelines: 50 pipelines at once on one host, each with
// two producers and a consumer reading while others write, through separate
// store values (as separate ferry processes would). No value is lost or
// mixed up.
func TestDirConcurrentPipelines(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for p := 0; p < 50; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			s, _ := NewDir(root)
			for j := 0; j < 2; j++ {
				id := int64(1000 + p*10 + j)
				r := &Report{Vars: []dotenv.Var{{Key: "IMAGE", Value: fmt.Sprintf("reg/p%d:j%d", p, j)}, {Key: "JOB", Value: strconv.FormatInt(id, 10)}}}
				if err := s.Put(ctx, Key{ServerURL: "https://gitlab.example.com", ProjectID: int64(p), PipelineID: int64(p), JobID: id}, r); err != nil {
					errs <- err
					return
				}
			}
			// Rewrite the first (a retried upload stage) while reading both.
			for round := 0; round < 5; round++ {
				for j := 0; j < 2; j++ {
					id := int64(1000 + p*10 + j)
					got, err := s.Get(ctx, Key{ServerURL: "https://gitlab.example.com", JobID: id})
					if err != nil {
						errs <- err
						return
					}
					if got.Vars[0].Value != fmt.Sprintf("reg/p%d:j%d", p, j) || got.Vars[1].Value != strconv.FormatInt(id, 10) || got.ProjectID != int64(p) {
						errs <- fmt.Errorf("pipeline %d job %d: got %+v", p, j, got)
						return
					}
				}
				r := &Report{Vars: []dotenv.Var{{Key: "IMAGE", Value: fmt.Sprintf("reg/p%d:j0", p)}, {Key: "JOB", Value: strconv.Itoa(1000 + p*10)}}}
				if err := s.Put(ctx, Key{ServerURL: "https://gitlab.example.com", ProjectID: int64(p), PipelineID: int64(p), JobID: int64(1000 + p*10)}, r); err != nil {
					errs <- err
					return
				}
			}
		}(p)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "*", "*.json"))
	if len(files) != 100 {
		t.Fatalf("%d report files, want 100", len(files))
	}
	if tmp, _ := filepath.Glob(filepath.Join(root, "*", ".*")); len(tmp) != 0 {
		t.Fatalf("temp files left: %v", tmp)
	}
}

// TestDirKill9DuringPut kills a real writer process (this test binary,
// re-executed) with SIGKILL in the middle of storing 4 MiB reports: the
// visible report is always a whole one, and the leftover temp file is not
// visible to Get and goes at the sweep.
func TestDirKill9DuringPut(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), writerEnv+"="+root)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for two finished writes, then kill at a point that varies.
		buf := make([]byte, 64)
		lines := 0
		for lines < 2 {
			n, err := out.Read(buf)
			if err != nil {
				t.Fatalf("writer: %v", err)
			}
			lines += strings.Count(string(buf[:n]), "\n")
		}
		time.Sleep(time.Duration(round*7) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()

		s, _ := NewDir(root)
		r, err := s.Get(ctx, Key{ServerURL: "https://gitlab.example.com", JobID: 7})
		if err != nil {
			t.Fatalf("round %d: after kill -9: %v", round, err)
		}
		if len(r.Vars) != 3 || r.Vars[0].Value != r.Vars[2].Value || len(r.Vars[1].Value) != 4<<20 {
			t.Fatalf("round %d: partial report: %d vars", round, len(r.Vars))
		}
	}
	// Age whatever temp files the kills left; the sweep removes them and
	// keeps the report.
	tmps, _ := filepath.Glob(filepath.Join(root, "*", ".*"))
	t.Logf("temp files left by killed writers: %d", len(tmps))
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range tmps {
		os.Chtimes(p, old, old)
	}
	s, _ := NewDir(root)
	n, err := s.Sweep(ctx, time.Now())
	if err != nil || n != len(tmps) {
		t.Fatalf("sweep: %d, %v (want %d)", n, err, len(tmps))
	}
	if _, err := s.Get(ctx, Key{ServerURL: "https://gitlab.example.com", JobID: 7}); err != nil {
		t.Fatal(err)
	}
}

func TestDirSweep(t *testing.T) {
	ctx := context.Background()
	s, _ := NewDir(t.TempDir())
	now := time.Now()
	for i, exp := range []time.Time{now.Add(-time.Hour), now.Add(-time.Second), now.Add(time.Hour), {}} {
		if err := s.Put(ctx, key(int64(10+i)), &Report{Expires: exp}); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh temp file (a write in progress) is left alone.
	tmp := filepath.Join(filepath.Dir(s.path(key(10))), ".99.json.tmp123")
	os.WriteFile(tmp, []byte("{"), 0o600)
	n, err := s.Sweep(ctx, now)
	if err != nil || n != 2 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	for i, want := range []bool{false, false, true, true} {
		_, err := s.Get(ctx, key(int64(10+i)))
		if (err == nil) != want {
			t.Errorf("report %d: %v", i, err)
		}
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("in-progress temp file removed: %v", err)
	}
	// A corrupt report is reported, not removed silently.
	bad := filepath.Join(filepath.Dir(tmp), "5.json")
	os.WriteFile(bad, []byte("{"), 0o600)
	if _, err := s.Sweep(ctx, now); err == nil || !strings.Contains(err.Error(), "5.json") {
		t.Fatalf("corrupt: %v", err)
	}
	// Rate limit.
	if !s.SweepDue(now, time.Minute) || s.SweepDue(now.Add(30*time.Second), time.Minute) || !s.SweepDue(now.Add(2*time.Minute), time.Minute) {
		t.Fatal("SweepDue")
	}
	var missing Dir
	missing.root = filepath.Join(t.TempDir(), "none")
	if n, err := missing.Sweep(ctx, now); n != 0 || err != nil {
		t.Fatal(n, err)
	}
}

func TestParseExpireIn(t *testing.T) {
	day := 24 * time.Hour
	for in, want := range map[string]time.Duration{
		"1 day": day, "30 mins": 30 * time.Minute, "2 hrs 20 min": 2*time.Hour + 20*time.Minute,
		"1 week and 2 days": 9 * day, "3600": time.Hour, "42 seconds": 42 * time.Second,
		"1 mo": 30 * day, "1 yr": 365 * day, "30mins": 30 * time.Minute, "1.5 hours": 90 * time.Minute,
		"2 Days": 2 * day, "1h, 30m": 90 * time.Minute,
	} {
		got, never, err := ParseExpireIn(in)
		if err != nil || never || got != want {
			t.Errorf("%q: %v %v %v, want %v", in, got, never, err, want)
		}
	}
	if _, never, err := ParseExpireIn("never"); !never || err != nil {
		t.Error("never")
	}
	for _, bad := range []string{"", "soon", "1 fortnight", "day", "1 2 days", "0"} {
		if _, _, err := ParseExpireIn(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReportJSONHasNoSurprises(t *testing.T) {
	b, _ := json.Marshal(&Report{})
	if strings.Contains(string(b), "expires") {
		t.Fatalf("zero expiry encoded: %s", b)
	}
}
