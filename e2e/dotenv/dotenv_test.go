package dotenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/dotenv"
	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore"
	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore/kubestore"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func kubeStore(t *testing.T, namespace string) *kubestore.Store {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", storeKubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := kubestore.New(cfg, namespace)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKubeStore: put, get, replace, expiry, sweep by label, with a
// ServiceAccount that may only touch Secrets in its namespace.
func TestKubeStore(t *testing.T) {
	ctx := ctxT(t)
	s := kubeStore(t, "ferry-dotenv")
	k := dotenvstore.Key{ServerURL: "https://gitlab.example.com/", ProjectID: 42, PipelineID: 7, JobID: 701, JobName: "kaniko"}
	if _, err := s.Get(ctx, k); !errors.Is(err, dotenvstore.ErrNotFound) {
		t.Fatalf("empty: %v", err)
	}
	r := &dotenvstore.Report{Files: []string{"docker.env"}, Vars: []dotenv.Var{{Key: "IMAGE", Value: "reg/app:1"}},
		Expires: time.Now().Add(time.Hour)}
	if err := dotenvstore.Seal(k, r, "tok"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, k, r); err != nil {
		t.Fatal(err)
	}
	r.Vars[0].Value = "reg/app:2" // the upload stage ran again
	if err := dotenvstore.Seal(k, r, "tok"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, k, r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, k)
	if err != nil || got.Vars[0].Value != "reg/app:2" || got.JobName != "kaniko" || got.ServerURL != "https://gitlab.example.com" {
		t.Fatalf("get: %+v %v", got, err)
	}
	// What went through the API server still verifies with the token.
	if err := got.Verify("tok", k); err != nil {
		t.Fatalf("verify after a round trip through a Secret: %v", err)
	}
	sec, err := c.Client().CoreV1().Secrets("ferry-dotenv").Get(ctx, kubestore.SecretName(k), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for l, want := range map[string]string{kubestore.LabelManagedBy: kubestore.ManagedByValue, kubestore.LabelProject: "42",
		kubestore.LabelPipeline: "7", kubestore.LabelJob: "701", kubestore.LabelServer: k.ServerHash()} {
		if sec.Labels[l] != want {
			t.Errorf("label %s=%q, want %q", l, sec.Labels[l], want)
		}
	}
	if _, err := time.Parse(time.RFC3339, sec.Annotations[kubestore.AnnotationExpiry]); err != nil {
		t.Errorf("expiry annotation: %v", err)
	}

	// Expired and never-expiring reports, and a Secret that is not ferry's.
	old := k
	old.JobID = 600
	if err := s.Put(ctx, old, &dotenvstore.Report{Expires: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	never := k
	never.JobID = 601
	if err := s.Put(ctx, never, &dotenvstore.Report{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, old); !errors.Is(err, dotenvstore.ErrNotFound) {
		t.Fatalf("expired: %v", err)
	}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "not-ferry", Namespace: "ferry-dotenv",
		Annotations: map[string]string{kubestore.AnnotationExpiry: "2000-01-01T00:00:00Z"}}}
	if _, err := c.Client().CoreV1().Secrets("ferry-dotenv").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Sweep(ctx, time.Now())
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	for _, kk := range []dotenvstore.Key{k, never} {
		if _, err := s.Get(ctx, kk); err != nil {
			t.Errorf("after sweep: %v", err)
		}
	}
	if _, err := c.Client().CoreV1().Secrets("ferry-dotenv").Get(ctx, "not-ferry", metav1.GetOptions{}); err != nil {
		t.Errorf("the sweep touched a Secret that is not ferry's: %v", err)
	}
	// Outside its namespace the ServiceAccount is refused: an error, not
	// "no report" (a consumer must not run without its variables silently).
	if _, err := kubeStore(t, "default").Get(ctx, k); err == nil || errors.Is(err, dotenvstore.ErrNotFound) {
		t.Fatalf("other namespace: %v", err)
	}
}

// TestKubeStoreConcurrent: 50 jobs store and read their reports at once.
func TestKubeStoreConcurrent(t *testing.T) {
	ctx := ctxT(t)
	s := kubeStore(t, "ferry-dotenv")
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			k := dotenvstore.Key{ServerURL: "https://gitlab.example.com", ProjectID: 1, PipelineID: int64(i), JobID: int64(5000 + i)}
			want := fmt.Sprintf("reg/p%d", i)
			if err := s.Put(ctx, k, &dotenvstore.Report{Vars: []dotenv.Var{{Key: "IMAGE", Value: want}}, Expires: time.Now().Add(time.Hour)}); err != nil {
				errs <- err
				return
			}
			got, err := s.Get(ctx, k)
			if err != nil {
				errs <- err
			} else if got.Vars[0].Value != want {
				errs <- fmt.Errorf("job %d: %q", i, got.Vars[0].Value)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// hostWrapper is the "ferry binary" the runner driver calls: it runs the
// real ferry with a state dir of its own per job name, as if each job ran on
// another runner host.
func hostWrapper(t *testing.T, base string) string {
	t.Helper()
	p := filepath.Join(base, "ferry-on-host")
	script := "#!/bin/sh\nsub=$1; shift\nexec " + ferryBinary(t) + ` "$sub" --state-dir="` + base + `/host-$CUSTOM_ENV_CI_JOB_NAME" "$@"` + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func seedPipeline() runnerdriver.Pipeline {
	return runnerdriver.Pipeline{
		Stages: []string{"image", "deploy"},
		Files:  map[string]string{"deployment.yml": "image: IMAGE\n"},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image",
				Variables: []runnerdriver.Variable{{Key: "FERRY_DOTENV_SECRET_KEYS", Value: "REGISTRY_PASSWORD", Public: true}},
				Script:    []string{`printf 'IMAGE=registry.example.com/shark-app:%s\nREGISTRY_PASSWORD=hunter2-Qx81zz\n' "$CI_COMMIT_SHORT_SHA" > docker.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}},
			{Name: "kube", Stage: "deploy", Needs: []runnerdriver.Need{{Job: "kaniko"}},
				Script: []string{`echo "image=[${IMAGE-unset}] pw=[${REGISTRY_PASSWORD-unset}]"`, `sed -i -e "s|IMAGE|${IMAGE}|g" deployment.yml`, `cat deployment.yml`}},
		},
	}
}

// TestPipelineAcrossHosts: seed 000 with kaniko and kube on different hosts.
// With the dir store the consumer cannot see the report (the control);
// with the Kubernetes store it gets IMAGE, and the secret masked.
func TestPipelineAcrossHosts(t *testing.T) {
	ctx := ctxT(t)
	kc := storeKubeconfig(t)
	for _, tc := range []struct {
		store string
		args  []string
	}{
		{"dir", []string{"--dotenv-store=dir"}},
		{"kubernetes", []string{"--dotenv-store=kubernetes", "--dotenv-kubeconfig=" + kc, "--dotenv-namespace=ferry-dotenv"}},
	} {
		t.Run(tc.store, func(t *testing.T) {
			base := t.TempDir()
			d, err := runnerdriver.New(runnerdriver.Config{
				FerryBinary: hostWrapper(t, base), BaseDir: base, PrepareAttempts: 1,
				ExtraArgs: append([]string{"--kube-sources=none"}, tc.args...),
				Env:       []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base, "LANG=C.UTF-8"},
			})
			if err != nil {
				t.Fatal(err)
			}
			pr := d.RunPipeline(ctx, seedPipeline())
			for _, n := range []string{"kaniko", "kube"} {
				if r := pr.Jobs[n]; r.Status != runnerdriver.StatusSuccess {
					t.Fatalf("%s: %s %s\n%s", n, r.Status, r.Error, runnerdriver.StripANSI(r.Log))
				}
			}
			log := runnerdriver.StripANSI(pr.Jobs["kube"].Log)
			if strings.Contains(log, "hunter2-Qx81zz") {
				t.Errorf("secret in the log:\n%s", log)
			}
			if _, err := os.Stat(filepath.Join(base, "host-kaniko")); err != nil {
				t.Fatal("producer host state dir:", err)
			}
			if _, err := os.Stat(filepath.Join(base, "host-kube", "dotenv")); err == nil && tc.store == "dir" {
				entries, _ := filepath.Glob(filepath.Join(base, "host-kube", "dotenv", "*", "*.json"))
				if len(entries) > 0 {
					t.Fatalf("consumer host has reports: %v", entries)
				}
			}
			switch tc.store {
			case "dir":
				if !strings.Contains(log, "image=[unset] pw=[unset]") {
					t.Errorf("dir store crossed hosts:\n%s", log)
				}
			case "kubernetes":
				if !strings.Contains(log, "image=[registry.example.com/shark-app:") || !strings.Contains(log, "pw=[[MASKED]]") ||
					!strings.Contains(log, "dotenv: IMAGE, REGISTRY_PASSWORD (masked) from kaniko") ||
					!strings.Contains(log, "image: registry.example.com/shark-app:") {
					t.Errorf("kube job:\n%s", log)
				}
			}
		})
	}
}
