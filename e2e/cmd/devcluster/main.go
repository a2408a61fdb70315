// Command devcluster runs ferry's test cluster (a real kube-apiserver and
// etcd on loopback, see package cluster) until SIGINT or SIGTERM, and writes
// the credentials a seed pipeline would be given into a directory (-dir,
// default .devcluster):
//
//	admin.kubeconfig            full rights
//	gitlab-example.kubeconfig   ServiceAccount example/gitlab-example bound to ClusterRole admin
//	KUBECONFIG.base64           the same, one line of base64 (a masked CI variable's value, seed 000)
//	ca.pem                      the serving CA (KUBE_CA_PEM_FILE)
//	kube.env                    KUBE_URL, KUBE_TOKEN, KUBE_CA_PEM_FILE, KUBE_NAMESPACE (seed 003)
//	ready                       the API server URL, written last: wait for it from scripts
//
// The rollout simulator is on by default (-simulate-rollouts=false turns it
// off), so `kubectl rollout status` and ferry's readiness wait finish.
// On exit devcluster removes the files it wrote (ready first) and the
// directory if it created it. It refuses a directory holding other files,
// so a mistyped -dir cannot delete anything of the user's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
)

// Files devcluster writes, in writing order; "ready" must stay last.
var files = []string{"admin.kubeconfig", "gitlab-example.kubeconfig", "KUBECONFIG.base64", "ca.pem", "kube.env", "ready"}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain is main without os.Exit, so tests can run the real command,
// signal handling included, in-process.
func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("devcluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".devcluster", "directory for kubeconfigs and variables")
	simulate := fs.Bool("simulate-rollouts", true, "report Deployments, StatefulSets, DaemonSets and Jobs as rolled out, as their controllers would")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *simulate, stdout); err != nil {
		fmt.Fprintf(stderr, "devcluster: %v\n", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, dir string, simulate bool, stdout io.Writer) (err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	created, err := prepareDir(abs)
	if err != nil {
		return err
	}
	defer func() {
		// ready first, so a script polling for it never sees a dead cluster's.
		for i := len(files) - 1; i >= 0; i-- {
			if rmErr := os.Remove(filepath.Join(abs, files[i])); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
				err = errors.Join(err, rmErr)
			}
		}
		if created {
			err = errors.Join(err, os.Remove(abs))
		}
	}()

	started := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{SimulateRollouts: simulate})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Stop()) }()
	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
	if err != nil {
		return err
	}
	admin, err := os.ReadFile(c.AdminKubeconfigPath)
	if err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	ca := filepath.Join(abs, "ca.pem")
	content := map[string][]byte{
		"admin.kubeconfig":          admin,
		"gitlab-example.kubeconfig": sa.Kubeconfig,
		"KUBECONFIG.base64":         []byte(sa.KubeconfigBase64 + "\n"),
		"ca.pem":                    c.CACertPEM,
		"kube.env": fmt.Appendf(nil, "KUBE_URL=%s\nKUBE_TOKEN=%s\nKUBE_CA_PEM_FILE=%s\nKUBE_NAMESPACE=%s\n",
			sa.KubeURL, sa.KubeToken, ca, sa.KubeNamespace),
		"ready": []byte(c.URL + "\n"),
	}
	for _, name := range files {
		// 0600: these are credentials.
		if err := os.WriteFile(filepath.Join(abs, name), content[name], 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	fmt.Fprintf(stdout, "Kubernetes API server %s ready in %s (rollout simulation %s)\n\n",
		c.URL, time.Since(started).Round(time.Millisecond), map[bool]string{true: "on", false: "off"}[simulate])
	fmt.Fprintf(stdout, "  export KUBECONFIG=%s/admin.kubeconfig            # cluster admin\n", abs)
	fmt.Fprintf(stdout, "  export KUBECONFIG=%s/gitlab-example.kubeconfig   # seed 000's ServiceAccount, namespace example\n", abs)
	fmt.Fprintf(stdout, "  %s/KUBECONFIG.base64                             # seed 000's masked KUBECONFIG variable value\n", abs)
	fmt.Fprintf(stdout, "  set -a; . %s/kube.env; set +a                    # seed 003's KUBE_* variables\n\n", abs)
	fmt.Fprintln(stdout, "Ctrl-C (SIGINT) or SIGTERM stops the cluster and removes these files.")
	<-ctx.Done()
	fmt.Fprintln(stdout, "devcluster: stopping")
	return nil
}

// prepareDir makes sure dir exists and holds nothing but files of an earlier
// devcluster run (a killed one leaves them), which it removes. It reports
// whether it created dir.
func prepareDir(dir string) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("create %s: %w", dir, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if !slices.Contains(files, e.Name()) {
			return false, fmt.Errorf("directory %s holds %s, which devcluster did not write: choose another -dir", dir, e.Name())
		}
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return false, fmt.Errorf("remove a previous run's %s: %w", e.Name(), err)
		}
	}
	return false, nil
}
