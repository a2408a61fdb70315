// Command ferry-apply is a stand-in for `ferry kubectl apply -f DIR [-n NS]`
// used by the benchmarks only until pkg/kubectl is wired into the ferry
// binary: it does what that command does with the engine (kubeconfig from
// KUBECONFIG, discovery cache under FERRY_STATE_DIR), nothing more.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	fs := flag.NewFlagSet("apply", flag.ExitOnError)
	var files multi
	fs.Var(&files, "f", "file or directory")
	ns := fs.String("n", "", "namespace")
	recursive := fs.Bool("R", false, "recursive")
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "apply" {
		args = args[1:]
	}
	_ = fs.Parse(args)
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	defNS, _, _ := cc.Namespace()
	if *ns != "" {
		defNS = *ns
	}
	objs, err := apply.ReadManifests(apply.ReadOptions{Filenames: files, Recursive: *recursive, Stdin: os.Stdin})
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	opts := apply.Options{}
	if d := os.Getenv("FERRY_STATE_DIR"); d != "" {
		opts.DiscoveryCacheDir = filepath.Join(d, "cache", "discovery")
	}
	a, err := apply.NewApplier(cfg, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	res, err := a.Apply(context.Background(), objs, apply.ApplyOptions{Namespace: defNS, NamespaceExplicit: *ns != "", Out: os.Stdout, ErrOut: os.Stderr})
	if err != nil || res.Err() != nil {
		os.Exit(1)
	}
}

type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
