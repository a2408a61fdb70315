// Command demo is `make demo`: it starts the embedded Kubernetes API server,
// runs seed 000's pipeline the ferry way through the runner-faithful driver
// and the real ferry binary, prints every job's log as GitLab would show it,
// then the objects the pipeline created. Exit status 0 when the pipeline
// passed.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/e2e/seeds"
	rd "gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\033[1m==> "+format+"\033[0m\n", a...) }

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	work, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	step("building ferry")
	ferry, err := seeds.BuildFerry(work)
	if err != nil {
		return err
	}
	step("starting a real kube-apiserver + etcd on loopback")
	started := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{SimulateRollouts: true})
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("    %s ready in %s\n", c.URL, time.Since(started).Round(time.Millisecond))
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		return err
	}
	fmt.Println("    ServiceAccount example/gitlab-example (RoleBinding to ClusterRole admin); its kubeconfig is the masked base64 project variable KUBECONFIG")

	d, err := seeds.NewDriver(ferry, filepath.Join(work, "runner"))
	if err != nil {
		return err
	}
	step("pipeline: docker (writes IMAGE to docker.env, a dotenv report) -> kube (kubectl apply --envsubst -f deployment.yml) + rbac-check")
	p, err := seeds.Seed000("ferry", sa)
	if err != nil {
		return err
	}
	pr := d.RunPipeline(ctx, p)
	for _, name := range pr.Order {
		j := pr.Jobs[name]
		fmt.Printf("\n\033[1m---------- job %s (%s) ----------\033[0m\n", name, j.Status)
		fmt.Print(rd.Render(j.Log))
	}

	step("objects in namespace example (ferry kubectl get deployments -n example -o wide)")
	cmd := exec.CommandContext(ctx, ferry, "kubectl", "--kubeconfig", c.AdminKubeconfigPath, "get", "deployments", "-n", "example", "-o", "wide")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("listing the objects: %w", err)
	}
	cmd = exec.CommandContext(ctx, ferry, "kubectl", "--kubeconfig", c.AdminKubeconfigPath, "get", "deployment", "shark-app", "-n", "example",
		"-o", "jsonpath={.spec.template.spec.containers[0].image}{\"\\n\"}")
	fmt.Print("    image deployed: ")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return err
	}
	if pr.Status != rd.StatusSuccess {
		return fmt.Errorf("pipeline %s", pr.Status)
	}
	step("pipeline passed: the rbac-check job failed as intended (allowed to fail): the ServiceAccount cannot read kube-system")
	return nil
}
