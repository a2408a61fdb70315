// Package kubecreds_test checks ferry's Kubernetes credentials handling
// against a real kube-apiserver and etcd (e2e/cluster): one cluster for the
// package.
package kubecreds_test

import (
	"testing"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
)

var c *cluster.Cluster

func TestMain(m *testing.M) { cluster.Main(m, &c) }
