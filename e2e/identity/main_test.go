// Package identity_test plays a hostile project on a shared runner host
// against ferry, through the runner-faithful driver, as an unprivileged
// runner user (internal/asuser): a job that claims another job's id, and a
// job that replaces <state>/jobs with a symlink. Jobs hold real Kubernetes
// credentials of the in-process cluster (e2e/cluster).
package identity_test

import (
	"os"
	"testing"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/internal/asuser"
)

var c *cluster.Cluster

func TestMain(m *testing.M) {
	if asuser.IsChild() {
		// The test body as the runner user: it talks to the parent's
		// cluster with the credentials the parent handed over.
		os.Exit(m.Run())
	}
	cluster.Main(m, &c)
}
