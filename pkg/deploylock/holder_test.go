package deploylock_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/deploylock"
	"gitlab.com/ferry-ci/ferry/pkg/deploylock/lockclient"
)

// The test binary plays three parts besides the tests, chosen by its
// arguments and environment: the holder itself (what the engine runs),
// a "prepare" that starts a holder and exits at once, and a "kubectl" of
// the job that asks the holder.
const (
	startEnv = "FERRY_TEST_LOCK_START" // a lockclient.Config in JSON
	askEnv   = "FERRY_TEST_LOCK_ASK"   // the holder's socket
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == lockclient.Subcommand {
		os.Exit(deploylock.Main(os.Stdin, os.Stderr))
	}
	if v := os.Getenv(startEnv); v != "" {
		var cfg lockclient.Config
		if err := json.Unmarshal([]byte(v), &cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		if err := lockclient.Start(os.Args[0], cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		// As prepare does: exit as soon as the holder is started.
		os.Exit(0)
	}
	if v := os.Getenv(askEnv); v != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// No namespace: the holder answers with its one-line error without
		// any API server, which proves it read its config and serves.
		err := lockclient.Acquire(ctx, v, lockclient.Request{Verb: "apply"}, os.Stderr)
		fmt.Println(err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// prepare starts the job's lock holder and exits right away; the holder
// must serve the job's kubectl whatever the timing. It failed on the old
// Start (the config on stdin copied by a goroutine of prepare, lost when
// prepare exited first): the holder read end of file, logged "bad config"
// and left a socket nobody listened on, and the kubectl got "connection
// refused" (seen once in a clean-clone CI run of e2e/deployguard).
func TestHolderServesAfterPrepareExits(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const jrf = "/jrf/holder-test"
	runs := 40
	if testing.Short() {
		runs = 10
	}
	for i := range runs {
		cfg := lockclient.Config{
			Dir: filepath.Join(t.TempDir(), "lock"), ID: fmt.Sprintf("t-%d", i), Project: "g/p", Pipeline: "1", Job: "1",
			LeaseDuration: 15 * time.Second, Deadline: time.Now().Add(time.Hour), UID: os.Getuid(),
			// The kubectl below is this process's child and carries jrf:
			// this process is its "runner".
			JobResponseFile: jrf, RunnerPID: os.Getpid(),
		}
		b, _ := json.Marshal(cfg)
		prep := exec.Command(exe, "-test.run=^$")
		prep.Env = append(os.Environ(), startEnv+"="+string(b))
		if out, err := prep.CombinedOutput(); err != nil {
			t.Fatalf("run %d: prepare: %v\n%s", i, err, out)
		}
		ask := exec.Command(exe, "-test.run=^$")
		ask.Env = append(os.Environ(), askEnv+"="+filepath.Join(cfg.Dir, lockclient.SocketFile), "JOB_RESPONSE_FILE="+jrf)
		out, err := ask.Output()
		got := strings.TrimSpace(string(out))
		if err != nil || got != "ferry: deploy lock: no namespace" {
			log, _ := os.ReadFile(filepath.Join(cfg.Dir, lockclient.LogFile))
			lockclient.Stop(cfg.Dir)
			t.Fatalf("run %d: the holder did not serve the job's kubectl: %v %q\nholder.log:\n%s", i, err, got, log)
		}
		_, running := lockclient.HolderPID(cfg.Dir)
		if !running {
			t.Fatalf("run %d: the holder is not running after it answered", i)
		}
		if err := lockclient.Stop(cfg.Dir); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(cfg.Dir); !os.IsNotExist(err) {
			t.Fatalf("run %d: Stop left %s: %v", i, cfg.Dir, err)
		}
	}
}
