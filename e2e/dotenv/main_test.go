// Package dotenv_test checks ferry's Kubernetes dotenv store against a real
// kube-apiserver and etcd (e2e/cluster): the store itself with the least
// RBAC it needs, and whole pipelines through the ferry binary where the
// producer and the consumer run on different "hosts" (separate state dirs).
package dotenv_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
)

var c *cluster.Cluster

func TestMain(m *testing.M) { cluster.Main(m, &c, cluster.Options{}) }

// storeRole is the least a runner's dotenv credentials need (docs/dotenv.md).
const storeRole = "ferry-dotenv-store"

var (
	credsOnce sync.Once
	credsErr  error
	kubecfg   string // kubeconfig file of the store's ServiceAccount
)

// storeKubeconfig creates namespace ferry-dotenv, a ServiceAccount bound to
// a role allowing only Secrets there, and writes its kubeconfig.
func storeKubeconfig(t *testing.T) string {
	t.Helper()
	credsOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: storeRole},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"},
				Verbs: []string{"get", "list", "create", "update", "delete"}}},
		}
		if _, err := c.Client().RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
			credsErr = err
			return
		}
		cr, err := c.ServiceAccountCredentials(ctx, "ferry-dotenv", "ferry-runner", storeRole)
		if err != nil {
			credsErr = err
			return
		}
		// In the cluster's own directory, which Stop removes.
		kubecfg = filepath.Join(c.Dir, "dotenv-store.kubeconfig")
		credsErr = os.WriteFile(kubecfg, cr.Kubeconfig, 0o600)
	})
	if credsErr != nil {
		t.Fatal(credsErr)
	}
	return kubecfg
}

// ferryBinary builds ferry once for the test binary (scripts/build.sh, the
// engine embedded, as shipped).
func ferryBinary(t *testing.T) string {
	t.Helper()
	bin, err := ferrybuild.Shared()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
