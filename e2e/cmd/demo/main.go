// Command demo is `make demo`: it starts the embedded Kubernetes API server,
// runs seed 000's pipeline the ferry way through the runner-faithful driver
// and the real ferry binary, prints every job's log as GitLab would show it,
// then the objects the pipeline created. Exit status 0 when the pipeline
// passed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/e2e/seeds"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	rd "gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

func main() {
	version := flag.String("version", "", "the version to stamp ferry with (default: git describe --tags --always --dirty of the checkout, as `make build`)")
	timeout := flag.Duration("timeout", 5*time.Minute, "how long the run may take once everything is built (the cluster, the pipeline, the listing)")
	flag.Parse()
	if err := run(*version, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\033[1m==> "+format+"\033[0m\n", a...) }

// gitVersion is what `make build` stamps: git describe of the checkout, or
// "dev" outside a git checkout.
func gitVersion() string {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = ferrybuild.RepoRoot()
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
}

// bounded runs f with its own deadline, cut from the run's, and says what
// it waited for, and for how long, when that runs out.
func bounded(ctx context.Context, timeout time.Duration, what string, f func(context.Context) error) error {
	start := time.Now()
	err := f(ctx)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: not done within the demo's -timeout=%s (counted from the end of the build; this step ran %s): %w",
			what, timeout, time.Since(start).Round(time.Second), err)
	}
	return err
}

func run(version string, timeout time.Duration) error {
	if version == "" {
		version = gitVersion()
	}
	// The runner's files live in the checkout's .demo/, not under /tmp:
	// ferry gives each job a private /tmp (--private-tmp=auto), in which the
	// driver's repository under the host's /tmp would not exist for the
	// job's git clone.
	root := filepath.Join(ferrybuild.RepoRoot(), ".demo")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(root, "run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// Everything that compiles comes first and has no deadline: on a busy
	// 2-core machine a cold build takes minutes, and that is no reason to
	// fail. The clock starts once ferry and the driver are ready.
	step("building ferry %s (scripts/build.sh, as make build)", version)
	built := time.Now()
	ferry, err := ferrybuild.BuildVersion(work, version)
	if err != nil {
		return err
	}
	d, err := seeds.NewDriver(ferry, filepath.Join(work, "runner"))
	if err != nil {
		return err
	}
	fmt.Printf("    built in %s\n", time.Since(built).Round(time.Second))

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	step("starting a real kube-apiserver + etcd on loopback")
	started := time.Now()
	var c *cluster.Cluster
	if err := bounded(ctx, timeout, "starting the kube-apiserver and etcd", func(ctx context.Context) error {
		var err error
		c, err = cluster.Start(ctx, cluster.Options{SimulateRollouts: true})
		return err
	}); err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("    %s ready in %s\n", c.URL, time.Since(started).Round(time.Millisecond))
	var sa *cluster.Credentials
	if err := bounded(ctx, timeout, "creating the ServiceAccount example/gitlab-example", func(ctx context.Context) error {
		var err error
		sa, err = c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
		return err
	}); err != nil {
		return err
	}
	fmt.Println("    ServiceAccount example/gitlab-example (RoleBinding to ClusterRole admin); its kubeconfig is the masked base64 project variable KUBECONFIG")

	step("pipeline: docker (writes IMAGE to docker.env, a dotenv report) -> kube (kubectl apply --envsubst -f deployment.yml) + rbac-check")
	p, err := seeds.Seed000("ferry", sa)
	if err != nil {
		return err
	}
	ran := time.Now()
	pr := d.RunPipeline(ctx, p)
	for _, name := range pr.Order {
		j := pr.Jobs[name]
		fmt.Printf("\n\033[1m---------- job %s (%s) ----------\033[0m\n", name, j.Status)
		fmt.Print(rd.Render(j.Log))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("the pipeline: not done within the demo's -timeout=%s (counted from the end of the build; the pipeline ran %s): %w",
			timeout, time.Since(ran).Round(time.Second), ctx.Err())
	}

	step("objects in namespace example (ferry kubectl get deployments -n example -o wide)")
	cmd := exec.CommandContext(ctx, ferry, "kubectl", "--kubeconfig", c.AdminKubeconfigPath, "get", "deployments", "-n", "example", "-o", "wide")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := bounded(ctx, timeout, "listing the objects", func(context.Context) error { return cmd.Run() }); err != nil {
		return fmt.Errorf("listing the objects: %w", err)
	}
	cmd = exec.CommandContext(ctx, ferry, "kubectl", "--kubeconfig", c.AdminKubeconfigPath, "get", "deployment", "shark-app", "-n", "example",
		"-o", "jsonpath={.spec.template.spec.containers[0].image}{\"\\n\"}")
	fmt.Print("    image deployed: ")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := bounded(ctx, timeout, "reading the deployed image", func(context.Context) error { return cmd.Run() }); err != nil {
		return err
	}
	if pr.Status != rd.StatusSuccess {
		return fmt.Errorf("pipeline %s", pr.Status)
	}
	step("pipeline passed: the rbac-check job failed as intended (allowed to fail): the ServiceAccount cannot read kube-system")
	return nil
}
