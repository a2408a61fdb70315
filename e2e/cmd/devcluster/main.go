// Command devcluster runs ferry's test cluster (a real kube-apiserver and
// etcd on loopback, see package cluster) until interrupted, and writes the
// credentials a seed pipeline would be given into a directory:
//
//	admin.kubeconfig            full rights
//	gitlab-example.kubeconfig   ServiceAccount example/gitlab-example bound to ClusterRole admin
//	KUBECONFIG.base64           the same, one line of base64 (a masked CI variable's value)
//	ca.pem                      the serving CA (KUBE_CA_PEM_FILE)
//	kube.env                    KUBE_URL, KUBE_TOKEN, KUBE_CA_PEM_FILE, KUBE_NAMESPACE
//	ready                       written last: wait for it from scripts
//
// The directory is removed again on SIGINT/SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
)

func main() {
	dir := flag.String("dir", ".devcluster", "directory for kubeconfigs and variables")
	simulate := flag.Bool("simulate-rollouts", true, "report Deployments, StatefulSets, DaemonSets and Jobs as rolled out, as their controllers would")
	flag.Parse()
	if err := run(*dir, *simulate); err != nil {
		fmt.Fprintf(os.Stderr, "devcluster: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string, simulate bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{SimulateRollouts: simulate})
	if err != nil {
		return err
	}
	defer c.Stop()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	defer os.RemoveAll(dir)
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	admin, err := os.ReadFile(c.AdminKubeconfigPath)
	if err != nil {
		return err
	}
	ca := filepath.Join(abs, "ca.pem")
	files := []struct {
		name string
		data []byte
	}{
		{"admin.kubeconfig", admin},
		{"gitlab-example.kubeconfig", sa.Kubeconfig},
		{"KUBECONFIG.base64", []byte(sa.KubeconfigBase64 + "\n")},
		{"ca.pem", c.CACertPEM},
		{"kube.env", []byte(fmt.Sprintf("KUBE_URL=%s\nKUBE_TOKEN=%s\nKUBE_CA_PEM_FILE=%s\nKUBE_NAMESPACE=%s\n",
			sa.KubeURL, sa.KubeToken, ca, sa.KubeNamespace))},
		{"ready", []byte(c.URL + "\n")},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(abs, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	fmt.Printf("Kubernetes API server %s ready in %s\n\n", c.URL, time.Since(started).Round(time.Millisecond))
	fmt.Printf("  export KUBECONFIG=%s/admin.kubeconfig           # cluster admin\n", abs)
	fmt.Printf("  export KUBECONFIG=%s/gitlab-example.kubeconfig  # seed 000's ServiceAccount (namespace example)\n", abs)
	fmt.Printf("  $(cat %s/KUBECONFIG.base64)                       # the masked CI variable's value\n", abs)
	fmt.Printf("  set -a; . %s/kube.env; set +a                     # seed 003's KUBE_* variables\n\n", abs)
	fmt.Println("Press Ctrl-C to stop; the directory is removed on exit.")
	<-ctx.Done()
	fmt.Println("stopping")
	return nil
}
