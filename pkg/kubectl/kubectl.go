// Package kubectl is the kubectl that deploy jobs find on their PATH when
// they run through ferry: the verbs where ferry is measurably faster or
// safer than kubectl's own code (apply, diff, create, wait, version;
// docs/kubectl.md, "Which verbs are ferry's and why") implemented on
// client-go and ferry's server-side apply engine (pkg/apply), with
// kubectl's flags, output and exit codes. Every other verb, and every flag
// of those verbs that ferry does not implement itself, runs kubectl's own
// command code (Runtime.Other): no kubectl is needed on the host.
//
// It runs inside the job script, so it reads KUBECONFIG (ferry's private
// per-job kubeconfig, or whatever the script exported) and the job's
// variables from its process environment.
package kubectl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
	"gitlab.com/ferry-ci/ferry/pkg/stallguard"
)

// Supported lists the verbs ferry implements itself, for version's line.
const Supported = "apply, diff, create (namespace, configmap, secret, -f), wait, version"

// exitError carries kubectl's exit status for an error already printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// env is one command's world: its streams, global flags and the clients
// built from them on demand.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	kubeconfig, context, namespace, requestTimeout string
	namespaceSet                                   bool
	// upstream: an unknown flag or value hands the whole command to
	// kubectl's own code (errUpstream) rather than refusing it. Not for
	// apply and diff, whose semantics differ (server-side apply always).
	upstream bool

	// conn are kubectl's connection flags (--server, --token, ...), which
	// CI scripts use instead of a kubeconfig: they override its values.
	conn clientcmdapi.Cluster
	auth clientcmdapi.AuthInfo
	// cluster and user pick kubeconfig entries other than the context's.
	cluster, user string

	loader  clientcmd.ClientConfig
	applier *apply.Applier
	rt      Runtime
}

// Other runs a whole kubectl command (args without the program name) and
// returns its exit status: in the engine kubectl's own code
// (pkg/kubectl/upstream.Main, in process); in the job's small kubectl
// (executor/kubectl) an exec of the engine with the same arguments.
type Other func(args []string, stdin io.Reader, stdout, stderr io.Writer) int

// Runtime is what the binary running ferry's kubectl links besides ferry's
// own verbs (docs/kubectl.md, "Two kubectl binaries").
type Runtime struct {
	// Other runs what ferry does not do itself.
	Other Other
	// Discovery maps kinds and type arguments through the API server's
	// discovery (pkg/kubediscovery.Cached; the argument is the cache
	// directory). Nil in the small kubectl: then Other is the engine, and
	// every command that needs discovery goes there, before anything is
	// printed or sent.
	Discovery func(cacheDir string) apply.NewDiscovery
	// Kustomize builds a kustomization directory (kubectl -k); nil in the
	// small kubectl, which hands -k to the engine.
	Kustomize func(dir string) ([]byte, error)
}

// Main runs `kubectl args...` and returns the exit status (0 ok, 1 error,
// like kubectl; diff returns 1 when there are differences and 2 on error).
// Every verb and flag ferry does not implement itself goes to rt.Other,
// before anything is printed or sent to the API server.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer, rt Runtime) int {
	in := &recorder{r: stdin}
	e := &env{stdin: in, stdout: stdout, stderr: stderr, rt: rt}
	// In the engine, a mutating call to kubectl's own code takes the
	// deploy lock first (lock.go).
	other := e.lockedOther(rt.Other)
	if _, err := stallguard.FromEnv(); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	verb, rest, err := e.splitGlobals(args)
	if err != nil {
		// A global flag ferry does not know (--as, --cache-dir, ...).
		return other(args, stdin, stdout, stderr)
	}
	if rt.Discovery == nil && verb != "apply" && verb != "diff" && verb != "create" && verb != "version" {
		// The small kubectl: wait names a type, which takes discovery;
		// every other verb is kubectl's own. The engine has both.
		return other(args, stdin, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var run func(context.Context, []string) error
	e.upstream = true
	switch verb {
	case "apply":
		run, e.upstream = e.apply, false
	case "diff":
		run, e.upstream = e.diff, false
	case "create":
		run = e.create
	case "wait":
		run = e.wait
	case "version":
		run = e.version
	default:
		// get, delete, rollout, set, describe, logs, exec, patch, label,
		// help, ...: kubectl's own code (docs/kubectl.md, "Which verbs are
		// ferry's and why").
		return other(args, stdin, stdout, stderr)
	}
	err = run(ctx, rest)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUpstream):
		// Nothing was printed or sent yet: kubectl's code redoes it all.
		stop()
		return other(args, stdin, stdout, stderr)
	case errors.Is(err, errNeedsEngine) && rt.Discovery == nil:
		// The small kubectl: the engine redoes it all, with what this
		// command read from stdin.
		stop()
		return other(args, in.replay(), stdout, stderr)
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(stderr, formatError(err))
		return 1
	}
}

// errNeedsEngine is returned by apply and diff, before they have printed
// or sent anything, in the small kubectl for what only the engine links:
// a kind that needs discovery, kustomize, prune.
var errNeedsEngine = errors.New("needs ferry's engine")

// recorder keeps what a command read from stdin, for a hand-over to the
// engine after apply -f - found a kind that needs discovery.
type recorder struct {
	r   io.Reader
	buf bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

// replay is stdin as it was before this command read from it.
func (r *recorder) replay() io.Reader {
	if r.buf.Len() == 0 {
		return r.r
	}
	return io.MultiReader(bytes.NewReader(r.buf.Bytes()), r.r)
}

// errUpstream is returned by a verb, before it has printed or sent
// anything, for a flag or flag value it does not implement: Main then runs
// the whole command with kubectl's own code.
var errUpstream = errors.New("handled by kubectl's own code")

// formatError prints an error the way kubectl does: API errors as
// "Error from server (Reason): message", others as "error: message".
func formatError(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		st := se.Status()
		reason := ""
		if st.Reason != "" {
			reason = " (" + string(st.Reason) + ")"
		}
		return fmt.Sprintf("Error from server%s: %s", reason, st.Message)
	}
	return "error: " + err.Error()
}

// globalFlags registers the flags every verb accepts: kubectl's global
// flags that matter to a deploy job. -v is accepted and ignored: ferry does
// not log requests, and refusing it would break scripts that debug with it.
func (e *env) globalFlags(fs *pflag.FlagSet) {
	fs.StringVar(&e.kubeconfig, "kubeconfig", e.kubeconfig, "path to the kubeconfig file")
	fs.StringVar(&e.context, "context", e.context, "the kubeconfig context to use")
	fs.StringVarP(&e.namespace, "namespace", "n", e.namespace, "the namespace of this request")
	fs.StringVar(&e.requestTimeout, "request-timeout", e.requestTimeout, "how long to wait for one server request (e.g. 30s; 0: no limit)")
	fs.StringVarP(&e.conn.Server, "server", "s", e.conn.Server, "the API server's address (overrides the kubeconfig)")
	fs.StringVar(&e.conn.CertificateAuthority, "certificate-authority", e.conn.CertificateAuthority, "CA file to verify the server with")
	fs.BoolVar(&e.conn.InsecureSkipTLSVerify, "insecure-skip-tls-verify", e.conn.InsecureSkipTLSVerify, "do not verify the server's certificate")
	fs.StringVar(&e.conn.TLSServerName, "tls-server-name", e.conn.TLSServerName, "server name to verify the certificate against")
	fs.StringVar(&e.auth.Token, "token", e.auth.Token, "bearer token")
	fs.StringVar(&e.auth.ClientCertificate, "client-certificate", e.auth.ClientCertificate, "client certificate file")
	fs.StringVar(&e.auth.ClientKey, "client-key", e.auth.ClientKey, "client key file")
	fs.StringVar(&e.cluster, "cluster", e.cluster, "the kubeconfig cluster to use")
	fs.StringVar(&e.user, "user", e.user, "the kubeconfig user to use")
	if fs.Lookup("v") == nil {
		fs.StringP("v", "v", "0", "log level: accepted and ignored")
	}
}

// splitGlobals finds the verb: global flags may come before it
// (`kubectl -n x --token=$T apply ...`), as kubectl allows. Parsing stops at
// the first non-flag argument, the verb.
func (e *env) splitGlobals(args []string) (string, []string, error) {
	fs := pflag.NewFlagSet("kubectl", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false)
	e.globalFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return "help", nil, nil
		}
		return "", nil, err
	}
	e.namespaceSet = fs.Changed("namespace")
	if fs.NArg() == 0 {
		return "", nil, nil
	}
	return fs.Arg(0), fs.Args()[1:], nil
}

// flags returns a FlagSet for verb with the global flags registered.
func (e *env) flags(verb string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(verb, pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	e.globalFlags(fs)
	return fs
}

// parse parses a verb's flags and records whether -n was given.
func (e *env) parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if e.upstream {
			// Unknown flags, --help: kubectl's code knows them all.
			return errUpstream
		}
		if errors.Is(err, pflag.ErrHelp) {
			return exitError{0}
		}
		return err
	}
	if fs.Changed("namespace") {
		e.namespaceSet = true
	}
	return nil
}

// clientConfig loads the kubeconfig as kubectl does: --kubeconfig, else
// $KUBECONFIG (a list), else ~/.kube/config; --context and -n override.
func (e *env) clientConfig() clientcmd.ClientConfig {
	if e.loader == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = e.kubeconfig
		overrides := &clientcmd.ConfigOverrides{CurrentContext: e.context, Timeout: e.requestTimeout,
			ClusterInfo: e.conn, AuthInfo: e.auth}
		overrides.Context.Cluster, overrides.Context.AuthInfo = e.cluster, e.user
		if e.namespaceSet {
			overrides.Context.Namespace = e.namespace
		}
		e.loader = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	}
	return e.loader
}

// restConfig is the client configuration with a user agent naming ferry.
func (e *env) restConfig() (*rest.Config, error) {
	cfg, err := e.clientConfig().ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "ferry-kubectl"
	// A stalled API server fails the command in bounded time, for every
	// verb and for apply (pkg/stallguard holds the default limit).
	return stallguard.Guard(cfg, 0), nil
}

// resolvedNamespace is -n, else the context's namespace, else "default";
// explicit reports whether it came from -n.
func (e *env) resolvedNamespace() (string, bool, error) {
	if e.namespaceSet && e.namespace != "" {
		return e.namespace, true, nil
	}
	ns, _, err := e.clientConfig().Namespace()
	if clientcmd.IsEmptyConfig(err) {
		// No kubeconfig at all: client dry runs still work, as in kubectl.
		return "default", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return ns, e.namespaceSet, nil
}

// getApplier builds the engine once per command. Discovery is cached on the
// host under $FERRY_STATE_DIR/cache/discovery so later jobs skip it.
func (e *env) getApplier() (*apply.Applier, error) {
	if e.applier != nil {
		return e.applier, nil
	}
	cfg, err := e.restConfig()
	if err != nil {
		return nil, err
	}
	opts := apply.Options{}
	if e.rt.Discovery != nil {
		dir := ""
		if d := os.Getenv("FERRY_DISCOVERY_CACHE_DIR"); d != "" {
			// The job's own cache (ferry's sandbox: a shared one a job can
			// write would let it poison every later job's kubectl).
			dir = d
		} else if root := os.Getenv("FERRY_STATE_DIR"); root != "" {
			dir = filepath.Join(root, "cache", "discovery")
		}
		opts.Discovery = e.rt.Discovery(dir)
	}
	e.applier, err = apply.NewApplier(cfg, opts)
	return e.applier, err
}

// timeoutCtx bounds ctx by d when d > 0.
func timeoutCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}
