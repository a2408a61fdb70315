package jobsocket_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/docker/jobsocket"
)

// start runs sh -c script with env and returns the pid it prints of the
// process that should connect (the shell itself, or a child it started).
func start(t *testing.T, env []string, script string) int {
	t.Helper()
	c := exec.Command("sh", "-c", script)
	c.Env = env
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestPolicyAncestry: the test process plays the runner; its children with
// this job's JOB_RESPONSE_FILE are the job's executor calls.
func TestPolicyAncestry(t *testing.T) {
	p := jobsocket.Policy{UID: os.Getuid(), JobResponseFile: "/tmp/job-A/response.json", RunnerPID: os.Getpid()}
	path := "PATH=" + os.Getenv("PATH")
	for _, tc := range []struct {
		name   string
		env    []string
		script string
		want   string // "" accepted, else part of the reason
	}{
		{"the executor call itself", []string{path, "JOB_RESPONSE_FILE=" + p.JobResponseFile}, "echo $$; sleep 30", ""},
		{"a child without the variable", []string{path, "JOB_RESPONSE_FILE=" + p.JobResponseFile},
			`env -u JOB_RESPONSE_FILE sh -c 'echo $$; sleep 30'`, ""},
		{"another job's call", []string{path, "JOB_RESPONSE_FILE=/tmp/job-B/response.json"}, "echo $$; sleep 30", "belongs to another job"},
		{"another job's child naming this job's file", []string{path, "JOB_RESPONSE_FILE=/tmp/job-B/response.json"},
			`JOB_RESPONSE_FILE=/tmp/job-A/response.json sh -c 'echo $$; sleep 30'`, "belongs to another job"},
		{"no executor call above", []string{path}, "echo $$; sleep 30", "not started by a runner executor call"},
		{"escaped to another parent", []string{path},
			// A grandchild naming this job's file whose parent is not the runner.
			`JOB_RESPONSE_FILE=/tmp/job-A/response.json setsid sh -c 'echo $$; sleep 30' & wait`, "was not started by this job's runner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid := start(t, tc.env, tc.script)
			err := p.Check(pid, os.Getuid())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if err := p.Check(os.Getpid(), os.Getuid()+1); err == nil || !strings.Contains(err.Error(), "uid") {
		t.Fatalf("another uid: %v", err)
	}
}

// TestListenRefusesAndReports: a refused peer's connection is closed and
// reported; the socket is 0600.
func TestListenRefusesAndReports(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	refused := make(chan jobsocket.Refusal, 1)
	l, err := jobsocket.Listen(sock, jobsocket.Policy{UID: os.Getuid(), JobResponseFile: "/nowhere", RunnerPID: 1}, func(r jobsocket.Refusal) { refused <- r })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v", fi.Mode().Perm())
	}
	go l.Accept()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case r := <-refused:
		if r.PID != os.Getpid() || !strings.Contains(r.String(), "refused a connection from pid "+strconv.Itoa(os.Getpid())) {
			t.Fatalf("refusal: %s", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not refused")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("refused connection still open: %d %v", n, err)
	}
}
