package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	clientcmdlatest "k8s.io/client-go/tools/clientcmd/api/latest"

	"gitlab.com/ferry-ci/ferry/pkg/version"
)

// config implements the kubectl config verbs deploy scripts use (seed 003
// builds its kubeconfig with set-cluster/set-credentials/set-context/
// use-context). Files are read and written with clientcmd's PathOptions,
// the same code kubectl uses, so the files are kubectl's.
func (e *env) config(_ context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("config needs a subcommand: view, current-context, use-context, get-contexts, set-context, set-cluster, set-credentials")
	}
	sub, args := args[0], args[1:]
	// Not e.flags: set-context has a --namespace of its own, which must not
	// collide with the global -n.
	fs := pflag.NewFlagSet("config "+sub, pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&e.kubeconfig, "kubeconfig", e.kubeconfig, "path to the kubeconfig file")
	fs.StringVar(&e.context, "context", e.context, "ignored by config verbs, as in kubectl")
	var (
		raw, minify, flatten, embed, insecure, current                  bool
		server, ca, token, cert, key, user, cluster, ns, pw, un, output string
	)
	switch sub {
	case "view":
		fs.BoolVar(&raw, "raw", false, "show secrets")
		fs.BoolVar(&minify, "minify", false, "only the current context (or --context's)")
		fs.BoolVar(&flatten, "flatten", false, "embed the files the kubeconfig names (shows secrets, like --raw)")
		fs.StringVarP(&output, "output", "o", "yaml", "yaml, json or jsonpath=TEMPLATE")
	case "set-cluster":
		fs.StringVar(&server, "server", "", "API server URL")
		fs.StringVar(&ca, "certificate-authority", "", "CA file")
		fs.BoolVar(&embed, "embed-certs", false, "embed the files' contents")
		fs.BoolVar(&insecure, "insecure-skip-tls-verify", false, "do not verify the server's certificate")
	case "set-credentials":
		fs.StringVar(&token, "token", "", "bearer token")
		fs.StringVar(&cert, "client-certificate", "", "client certificate file")
		fs.StringVar(&key, "client-key", "", "client key file")
		fs.StringVar(&un, "username", "", "basic auth user")
		fs.StringVar(&pw, "password", "", "basic auth password")
		fs.BoolVar(&embed, "embed-certs", false, "embed the files' contents")
	case "set-context":
		fs.BoolVar(&current, "current", false, "modify the current context")
		fs.StringVar(&cluster, "cluster", "", "cluster name")
		fs.StringVar(&user, "user", "", "user name")
		fs.StringVar(&ns, "namespace", "", "namespace")
	case "current-context", "use-context", "get-contexts":
	default:
		return fmt.Errorf("ferry's kubectl does not support `config %s`; it supports view, current-context, use-context, get-contexts, set-context, set-cluster, set-credentials", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	po := clientcmd.NewDefaultPathOptions()
	po.LoadingRules.ExplicitPath = e.kubeconfig
	cfg, err := po.GetStartingConfig()
	if err != nil {
		return fmt.Errorf("reading kubeconfig: %w", err)
	}
	save := func() error {
		if err := clientcmd.ModifyConfig(po, *cfg, true); err != nil {
			return fmt.Errorf("writing kubeconfig: %w", err)
		}
		return nil
	}
	name := fs.Arg(0)
	switch sub {
	case "view":
		if fs.NArg() > 0 {
			return fmt.Errorf("unexpected arguments: %v", fs.Args())
		}
		return e.configView(cfg, raw, minify, flatten, output)
	case "current-context":
		if cfg.CurrentContext == "" {
			return errors.New("current-context is not set")
		}
		fmt.Fprintln(e.stdout, cfg.CurrentContext)
		return nil
	case "use-context":
		if name == "" {
			return errors.New("use-context needs a context name")
		}
		if _, ok := cfg.Contexts[name]; !ok {
			return fmt.Errorf("no context exists with the name: %q", name)
		}
		cfg.CurrentContext = name
		if err := save(); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Switched to context %q.\n", name)
		return nil
	case "get-contexts":
		tw := tabwriter.NewWriter(e.stdout, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "CURRENT\tNAME\tCLUSTER\tAUTHINFO\tNAMESPACE")
		names := make([]string, 0, len(cfg.Contexts))
		for n := range cfg.Contexts {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			c := cfg.Contexts[n]
			mark := ""
			if n == cfg.CurrentContext {
				mark = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, n, c.Cluster, c.AuthInfo, c.Namespace)
		}
		return tw.Flush()
	case "set-cluster":
		if name == "" {
			return errors.New("set-cluster needs a cluster name")
		}
		c, ok := cfg.Clusters[name]
		if !ok {
			c = clientcmdapi.NewCluster()
		}
		if fs.Changed("server") {
			c.Server = server
		}
		if fs.Changed("insecure-skip-tls-verify") {
			c.InsecureSkipTLSVerify = insecure
		}
		if err := embedOrLink(ca, embed, &c.CertificateAuthority, &c.CertificateAuthorityData); err != nil {
			return fmt.Errorf("could not read certificate-authority data from %s: %w", ca, err)
		}
		cfg.Clusters[name] = c
		if err := save(); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Cluster %q set.\n", name)
		return nil
	case "set-credentials":
		if name == "" {
			return errors.New("set-credentials needs a user name")
		}
		u, ok := cfg.AuthInfos[name]
		if !ok {
			u = clientcmdapi.NewAuthInfo()
		}
		if fs.Changed("token") {
			u.Token = token
		}
		if fs.Changed("username") {
			u.Username = un
		}
		if fs.Changed("password") {
			u.Password = pw
		}
		if err := embedOrLink(cert, embed, &u.ClientCertificate, &u.ClientCertificateData); err != nil {
			return fmt.Errorf("error reading client-certificate data from %s: %w", cert, err)
		}
		if err := embedOrLink(key, embed, &u.ClientKey, &u.ClientKeyData); err != nil {
			return fmt.Errorf("error reading client-key data from %s: %w", key, err)
		}
		cfg.AuthInfos[name] = u
		if err := save(); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "User %q set.\n", name)
		return nil
	case "set-context":
		if current {
			name = cfg.CurrentContext
			if name == "" {
				return errors.New("no current context is set")
			}
		}
		if name == "" {
			return errors.New("set-context needs a context name (or --current)")
		}
		c, exists := cfg.Contexts[name]
		if !exists {
			c = clientcmdapi.NewContext()
		}
		if fs.Changed("cluster") {
			c.Cluster = cluster
		}
		if fs.Changed("user") {
			c.AuthInfo = user
		}
		if fs.Changed("namespace") {
			c.Namespace = ns
		}
		cfg.Contexts[name] = c
		if err := save(); err != nil {
			return err
		}
		if exists {
			fmt.Fprintf(e.stdout, "Context %q modified.\n", name)
		} else {
			fmt.Fprintf(e.stdout, "Context %q created.\n", name)
		}
		return nil
	}
	return nil
}

// configView prints the kubeconfig as kubectl config view does, in the same
// order of steps: --minify (to --context's context when given), then
// --flatten, or else unless --raw the secrets redacted and the embedded
// data shortened to DATA+OMITTED. Redacting first matters: kubectl shows an
// embedded client key as DATA+OMITTED, not REDACTED. Every output format,
// jsonpath included, sees the redacted config: a script printing
// `-o jsonpath={.users[0].user.token}` gets REDACTED unless it says --raw.
func (e *env) configView(cfg *clientcmdapi.Config, raw, minify, flatten bool, output string) error {
	out := cfg.DeepCopy()
	if minify {
		if e.context != "" {
			out.CurrentContext = e.context
		}
		if err := clientcmdapi.MinifyConfig(out); err != nil {
			return err
		}
	}
	if flatten {
		if err := clientcmdapi.FlattenConfig(out); err != nil {
			return fmt.Errorf("flattening the kubeconfig: %w", err)
		}
	} else if !raw {
		if err := clientcmdapi.RedactSecrets(out); err != nil {
			return fmt.Errorf("redacting the kubeconfig: %w", err)
		}
		clientcmdapi.ShortenConfig(out)
	}
	switch {
	case output == "yaml" || output == "":
		b, err := clientcmd.Write(*out)
		if err != nil {
			return fmt.Errorf("printing yaml: %w", err)
		}
		_, err = e.stdout.Write(b)
		return err
	case output == "json" || strings.HasPrefix(output, "jsonpath="):
	default:
		return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,jsonpath,yaml", output)
	}
	// json and jsonpath see the file's own form (clientcmd/api/v1: named
	// lists, "certificate-authority-data", ...), as kubectl's printers do.
	v1, err := clientcmdlatest.Scheme.ConvertToVersion(out, clientcmdlatest.ExternalVersion)
	if err != nil {
		return fmt.Errorf("converting the kubeconfig: %w", err)
	}
	if output == "json" {
		b, err := json.MarshalIndent(v1, "", "    ")
		if err != nil {
			return fmt.Errorf("printing json: %w", err)
		}
		_, err = e.stdout.Write(append(b, '\n'))
		return err
	}
	b, err := json.Marshal(v1)
	if err != nil {
		return fmt.Errorf("printing jsonpath: %w", err)
	}
	var data any
	if err := json.Unmarshal(b, &data); err != nil {
		return fmt.Errorf("printing jsonpath: %w", err)
	}
	// kubectl's printer takes the template as written: no relaxed
	// ".current-context" form here (that prints the text ".current-context").
	return executeJSONPath(e.stdout, strings.TrimPrefix(output, "jsonpath="), data)
}

// embedOrLink stores a certificate or key file given to set-cluster or
// set-credentials as kubectl does: with --embed-certs its contents go into
// *data and the path is dropped, else the absolute path goes into *file and
// embedded data is dropped (the two would contradict each other). An empty
// path leaves both alone. The error is the read error alone: set-cluster and
// set-credentials word it differently, as kubectl does.
func embedOrLink(path string, embed bool, file *string, data *[]byte) error {
	if path == "" {
		return nil
	}
	if embed {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		*data, *file = b, ""
		return nil
	}
	// Abs only fails when the working directory is gone; the path as given
	// is then the best there is.
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	*file, *data = abs, nil
	return nil
}

func (e *env) version(_ context.Context, args []string) error {
	fs := e.flags("version")
	var client bool
	fs.BoolVar(&client, "client", false, "client version only")
	fs.StringP("output", "o", "", "ignored")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Client Version: ferry %s (kubectl-compatible subset: %s)\n", version.Version, Supported)
	if client {
		return nil
	}
	a, err := e.getApplier()
	if err != nil {
		return err
	}
	v, err := a.Discovery().ServerVersion()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Server Version: %s\n", v.GitVersion)
	return nil
}

// passthrough runs a real kubectl for a verb ferry does not implement. The
// job's PATH starts with ferry's own bin dir, whose kubectl is ferry: such
// entries (anything resolving to this executable) are skipped, so ferry
// never calls itself.
func passthrough(verb string, args []string, stdin interface{ Read([]byte) (int, error) }, stdout, stderr interface{ Write([]byte) (int, error) }) int {
	self, _ := os.Executable()
	self, _ = filepath.EvalSymlinks(self)
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			continue
		}
		cand := filepath.Join(dir, "kubectl")
		st, err := os.Stat(cand)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			continue
		}
		if real, err := filepath.EvalSymlinks(cand); err == nil && real == self {
			continue
		}
		cmd := exec.Command(cand, args...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			fmt.Fprintf(stderr, "error: running %s: %v\n", cand, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "error: ferry's kubectl does not implement %q and no other kubectl is on PATH. ferry implements: %s.\n", verb, Supported)
	return 1
}
