package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
)

// kubectl runs the reference kubectl (ferrybuild.ReferenceKubectl) with its own HOME (no ~/.kube leaks
// in) and the given extra environment.
func kubectl(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	bin, err := ferrybuild.ReferenceKubectl()
	if err != nil {
		t.Fatalf("the reference kubectl: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "HOME="+t.TempDir()), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// syncBuffer is written by the command's goroutine and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// The real command, in-process: it writes every file, each one works with
// the real kubectl the way the seeds use it, and SIGINT removes them all.
func TestDevclusterFilesWorkAndSIGINTCleansUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dc")
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- realMain([]string{"-dir", dir}, &out, &errOut) }()

	ready := filepath.Join(dir, "ready")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("devcluster exited %d before writing ready: %s", code, errOut.Bytes())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no ready file after 2 minutes")
		}
	}
	for _, name := range files {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600 (credentials)", name, fi.Mode().Perm())
		}
	}

	// Cluster admin.
	admin := "--kubeconfig=" + filepath.Join(dir, "admin.kubeconfig")
	if o, err := kubectl(t, nil, admin, "get", "namespace", "example", "-o", "name"); err != nil || strings.TrimSpace(o) != "namespace/example" {
		t.Fatalf("admin: get namespace example: %v\n%s", err, o)
	}

	// Seed 000: the masked variable's value decoded into a kubeconfig file.
	b64, err := os.ReadFile(filepath.Join(dir, "KUBECONFIG.base64"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b64, []byte("\n")) != 1 {
		t.Errorf("KUBECONFIG.base64 is not one line")
	}
	kc, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b64)))
	if err != nil {
		t.Fatalf("KUBECONFIG.base64: %v", err)
	}
	seed000 := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(seed000, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	env000 := []string{"KUBECONFIG=" + seed000}
	if o, err := kubectl(t, env000, "create", "deployment", "shark-app", "--image=registry.example.com/shark:1"); err != nil {
		t.Fatalf("seed 000 kubeconfig: create deployment in its namespace: %v\n%s", err, o)
	}
	if o, err := kubectl(t, env000, "get", "all", "-n", "kube-system"); err == nil || !strings.Contains(o, "forbidden") {
		t.Fatalf("seed 000 kubeconfig: get all -n kube-system: want forbidden, got %v\n%s", err, o)
	}
	// The rollout simulation is on by default.
	if o, err := kubectl(t, env000, "rollout", "status", "deployment/shark-app", "--timeout=60s"); err != nil || !strings.Contains(o, "successfully rolled out") {
		t.Fatalf("rollout status with the default -simulate-rollouts: %v\n%s", err, o)
	}

	// Seed 003: a kubeconfig built from KUBE_* with kubectl config.
	vars := map[string]string{}
	f, err := os.Open(filepath.Join(dir, "kube.env"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		vars[k] = v
	}
	f.Close()
	for _, k := range []string{"KUBE_URL", "KUBE_TOKEN", "KUBE_CA_PEM_FILE", "KUBE_NAMESPACE"} {
		if vars[k] == "" {
			t.Fatalf("kube.env lacks %s: %v", k, vars)
		}
	}
	env003 := []string{"KUBECONFIG=" + filepath.Join(t.TempDir(), "kubeconfig")}
	for _, args := range [][]string{
		{"config", "set-cluster", "gitlab-deploy", "--server=" + vars["KUBE_URL"], "--certificate-authority=" + vars["KUBE_CA_PEM_FILE"]},
		{"config", "set-credentials", "gitlab-deploy", "--token=" + vars["KUBE_TOKEN"]},
		{"config", "set-context", "gitlab-deploy", "--cluster=gitlab-deploy", "--user=gitlab-deploy", "--namespace=" + vars["KUBE_NAMESPACE"]},
		{"config", "use-context", "gitlab-deploy"},
		{"get", "deployment", "shark-app", "-o", "name"},
	} {
		if o, err := kubectl(t, env003, args...); err != nil {
			t.Fatalf("seed 003: kubectl %s: %v\n%s", strings.Join(args, " "), err, o)
		}
	}

	// SIGINT, as Ctrl-C sends it: the command's handler catches it.
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("devcluster exited %d after SIGINT: %s", code, errOut.Bytes())
		}
	case <-time.After(time.Minute):
		t.Fatal("devcluster still running a minute after SIGINT")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after SIGINT: %v", dir, err)
	}
	printed := out.Bytes()
	for _, want := range []string{"ready in", "admin.kubeconfig", "kube.env", "stopping"} {
		if !bytes.Contains(printed, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, printed)
		}
	}
}

// A -dir holding the user's own files is refused, and nothing in it is
// touched.
func TestDevclusterRefusesForeignDir(t *testing.T) {
	dir := t.TempDir()
	mine := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(mine, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := realMain([]string{"-dir", dir}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1; stderr: %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "notes.txt") {
		t.Errorf("the refusal does not name the foreign file: %s", errOut.String())
	}
	if b, err := os.ReadFile(mine); err != nil || string(b) != "keep me" {
		t.Errorf("the user's file was touched: %q %v", b, err)
	}
}
