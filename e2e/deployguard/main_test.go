// Package deployguard_test proves ferry's deploy rules (pkg/deployguard,
// docs/deploy-safety.md) end to end: jobs run through the runner-faithful
// driver, their kubectl applies to a real kube-apiserver, and the objects
// say who won.
package deployguard_test

import (
	"testing"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
)

var (
	c     *cluster.Cluster
	ferry string
)

func TestMain(m *testing.M) {
	var err error
	if ferry, err = ferrybuild.Shared(); err != nil {
		panic(err)
	}
	cluster.Main(m, &c, cluster.Options{SimulateRollouts: true})
}
