package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
)

// Main is a TestMain helper: it starts one cluster for the whole test
// package, stores it in *c, runs the tests and stops the cluster, so every
// test of a package shares one API server (starting one takes seconds).
func Main(m *testing.M, c **Cluster, opts ...Options) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	flag.Parse() // testing.Verbose needs it; m.Run parses again harmlessly
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	started := time.Now()
	cl, err := Start(ctx, o)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot start the test cluster: %v\n", err)
		os.Exit(1)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: cluster %s ready in %s\n", cl.URL, time.Since(started).Round(time.Millisecond))
	}
	*c = cl
	code := m.Run()
	ferrybuild.RemoveShared() // the ferry binary the package's tests built, if any
	if err := cl.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: stopping the test cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
