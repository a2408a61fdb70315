package runnerdriver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
)

// ferryBin is the ferry binary under test, built once for the package from
// scripts/build.sh (or taken from FERRY_BINARY, a prebuilt one).
var ferryBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if b := os.Getenv("FERRY_BINARY"); b != "" {
		ferryBin = b
		return m.Run()
	}
	var err error
	ferryBin, err = ferrybuild.Shared()
	defer ferrybuild.RemoveShared()
	if err != nil {
		// Every test needing the binary fails with this message.
		ferryBin = ""
		buildErr = err.Error()
	}
	return m.Run()
}

var buildErr string

// newDriver returns a driver on the real ferry binary with a private state
// dir and short timeouts.
func newDriver(t *testing.T, mod func(*Config)) *Driver {
	t.Helper()
	if ferryBin == "" {
		t.Fatal(buildErr)
	}
	base := t.TempDir()
	cfg := Config{
		FerryBinary:         ferryBin,
		BaseDir:             base,
		ExtraArgs:           []string{"--state-dir=" + filepath.Join(base, "state")},
		PrepareRetryDelay:   50 * time.Millisecond,
		GracefulKillTimeout: 5 * time.Second,
		ForceKillTimeout:    5 * time.Second,
		PipeWaitDelay:       3 * time.Second,
		Env:                 hostEnv(base),
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// hostEnv is a small, explicit runner environment.
func hostEnv(base string) []string {
	home := filepath.Join(base, "home")
	_ = os.MkdirAll(home, 0o755)
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// requireStatus fails with the job log when the job did not end as expected.
func requireStatus(t *testing.T, r *JobResult, status string) {
	t.Helper()
	if r == nil {
		t.Fatal("no result")
	}
	if r.Status != status {
		t.Fatalf("job %s: status %q (%s %s), want %q\n--- log ---\n%s\n--- system log ---\n%s\n--- calls ---\n%s",
			r.Name, r.Status, r.FailureReason, r.Error, status, StripANSI(r.Log), r.SystemLog, callsString(r.Calls))
	}
}

func callsString(cs []Call) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%s %s exit=%d attempt=%d signaled=%v held=%v %s %v\n", c.Kind, c.Stage, c.ExitCode, c.Attempt, c.Signaled, c.PipeHeldOpen, c.Err, c.Duration.Round(time.Millisecond))
	}
	return b.String()
}

func kinds(cs []Call) []string {
	var out []string
	for _, c := range cs {
		k := c.Kind
		if c.Stage != "" {
			k += ":" + c.Stage
		}
		out = append(out, k)
	}
	return out
}
