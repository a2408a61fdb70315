package kubectl

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/pkg/deploylock/lockclient"
)

// takeLock takes the job's deploy lock (docs/deploy-safety.md) before a
// call that changes objects in ns: the job's lock holder, outside the job
// script, takes and keeps it. Without a holder (the lock is off, or the job
// has no Kubernetes credentials of ferry's) it does nothing. Reads and dry
// runs never come here.
func (e *env) takeLock(ctx context.Context, ns, verb string) error {
	sock := os.Getenv(lockclient.SocketEnv)
	if sock == "" {
		return nil
	}
	if lockclient.Held(sock, ns) {
		return nil // an earlier call of this job took it; the holder keeps it
	}
	req := lockclient.Request{Namespace: ns, Verb: verb}
	cfg, err := e.clientConfig().ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil // no cluster: the call itself fails, as kubectl's
	}
	if err != nil {
		return err
	}
	if cfg.ExecProvider != nil || cfg.AuthProvider != nil {
		// Credentials that are a program: the holder uses the job's own
		// kubeconfig rather than run something the job named.
		req.UseJobKubeconfig = true
	} else {
		if err := rest.LoadTLSFiles(cfg); err != nil {
			return err
		}
		tok := cfg.BearerToken
		if tok == "" && cfg.BearerTokenFile != "" {
			b, err := os.ReadFile(cfg.BearerTokenFile)
			if err != nil {
				return err
			}
			tok = strings.TrimSpace(string(b))
		}
		req.Creds = lockclient.Creds{Server: cfg.Host, Token: tok, CAData: cfg.CAData, CertData: cfg.CertData,
			KeyData: cfg.KeyData, TLSServerName: cfg.ServerName, Insecure: cfg.Insecure,
			Username: cfg.Username, Password: cfg.Password}
	}
	return lockclient.Acquire(ctx, sock, req, e.stderr)
}

// takeLockAhead starts taking the deploy lock for a mutating call in the
// background, so that the holder's request to the API server overlaps
// what the call does before its first request of its own (reading the
// manifests, building its client). wait returns its outcome and must be
// called before anything is sent. The namespace is the call's (-n, else
// the kubeconfig's). The caller defers cancel, which drops the request
// when the call fails first; a lock already taken stays with the job, as
// any taken lock does.
func (e *env) takeLockAhead(ctx context.Context, verb string) *lockAhead {
	la := &lockAhead{cancel: func() {}}
	if os.Getenv(lockclient.SocketEnv) == "" {
		return la
	}
	ns, _, err := e.resolvedNamespace()
	if err != nil {
		return la // reported by the call itself, which resolves it again
	}
	if lockclient.Held(os.Getenv(lockclient.SocketEnv), ns) {
		return la // an earlier call of this job took it
	}
	ctx, la.cancel = context.WithCancel(ctx)
	la.done = make(chan error, 1)
	go func() { la.done <- e.takeLock(ctx, ns, verb) }()
	return la
}

// lockAhead is a lock being taken by takeLockAhead.
type lockAhead struct {
	done   chan error // nil: nothing to take
	once   sync.Once
	err    error
	cancel context.CancelFunc
}

// pending reports whether the lock is still being taken.
func (la *lockAhead) pending() bool {
	return la.done != nil && len(la.done) == 0
}

// wait returns once the lock is taken (nil) or cannot be.
func (la *lockAhead) wait() error {
	if la.done == nil {
		return nil
	}
	la.once.Do(func() { la.err = <-la.done })
	return la.err
}

// lockedOther is other preceded, for a mutating call, by the deploy lock:
// in the engine, where other is kubectl's own code in process. In the
// small kubectl other is the engine, which takes it.
func (e *env) lockedOther(other Other) Other {
	if e.rt.Discovery == nil || os.Getenv(lockclient.SocketEnv) == "" {
		return other
	}
	return func(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		verb, ns, ok := mutating(args)
		if ok {
			if ns == "" {
				n, _, err := e.resolvedNamespace()
				if err != nil {
					fmt.Fprintln(stderr, formatError(err))
					return 1
				}
				ns = n
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			err := e.takeLock(ctx, ns, verb)
			stop()
			if err != nil {
				fmt.Fprintln(stderr, "error: "+strings.TrimPrefix(err.Error(), "error: "))
				return 1
			}
		}
		return other(args, stdin, stdout, stderr)
	}
}

// Verbs that change objects. rollout and apply have read-only subcommands.
var mutatingVerbs = map[string]bool{
	"apply": true, "create": true, "delete": true, "patch": true, "replace": true, "label": true,
	"annotate": true, "scale": true, "autoscale": true, "expose": true, "run": true, "edit": true,
	"set": true, "rollout": true,
}

// Verbs that never change objects (so their arguments are never mistaken
// for a verb).
var readVerbs = map[string]bool{
	"get": true, "describe": true, "diff": true, "logs": true, "wait": true, "explain": true, "top": true,
	"events": true, "api-resources": true, "api-versions": true, "version": true, "config": true, "auth": true,
	"exec": true, "port-forward": true, "cp": true, "attach": true, "cluster-info": true, "completion": true,
	"plugin": true, "kustomize": true, "help": true, "proxy": true, "debug": true, "certificate": true,
	"cordon": true, "uncordon": true, "drain": true, "taint": true,
}

// mutating reads a kubectl command line tolerantly (flags ferry does not
// know included): the verb (the first argument that names one), the
// namespace of -n/--namespace if given, and whether the call changes
// objects: a mutating verb (rollout restart/undo/pause/resume, apply but
// not its view-last-applied) without --dry-run=client|server.
func mutating(args []string) (verb, ns string, ok bool) {
	var pos []string
	dry := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		switch {
		case a == "-n" || a == "--namespace":
			if i+1 < len(args) {
				ns = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "--namespace="):
			ns = strings.TrimPrefix(a, "--namespace=")
		case strings.HasPrefix(a, "-n") && !strings.HasPrefix(a, "--"):
			ns = strings.TrimPrefix(strings.TrimPrefix(a, "-n"), "=")
		case a == "--dry-run":
			dry = true // kubectl: client
		case strings.HasPrefix(a, "--dry-run="):
			dry = strings.TrimPrefix(a, "--dry-run=") != "none"
		case strings.HasPrefix(a, "-"):
		default:
			pos = append(pos, a)
		}
	}
	i := 0
	for i < len(pos) && !mutatingVerbs[pos[i]] && !readVerbs[pos[i]] {
		i++
	}
	if i == len(pos) || readVerbs[pos[i]] {
		return "", ns, false
	}
	verb = pos[i]
	sub := ""
	if i+1 < len(pos) {
		sub = pos[i+1]
	}
	switch verb {
	case "rollout":
		if sub != "restart" && sub != "undo" && sub != "pause" && sub != "resume" {
			return verb, ns, false
		}
		verb += " " + sub
	case "apply":
		if sub == "view-last-applied" {
			return verb, ns, false
		}
	case "set":
		verb += " " + sub
	}
	return verb, ns, !dry
}
