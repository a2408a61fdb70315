// Package kubecreds turns the Kubernetes credentials a job receives as CI/CD
// variables into one private, validated kubeconfig per job.
//
// Sources, in order of precedence (the first one present wins; the admin can
// rename the kubeconfig variable and switch sources off with Options):
//
//  1. "kubeconfig": the KUBECONFIG variable (Options.Variable), normal or
//     File type, holding a kubeconfig as YAML or as base64 (see Decode).
//  2. "cluster-vars": GitLab's certificate-based cluster integration
//     variables KUBE_URL + KUBE_TOKEN, with KUBE_CA_PEM (or the content of
//     the File variable KUBE_CA_PEM_FILE) and KUBE_NAMESPACE.
//
// KUBE_CONTEXT selects a context (GitLab agent kubeconfigs have none
// selected); KUBE_NAMESPACE fills in the namespace of a context without one.
//
// A kubeconfig that comes from a CI variable is untrusted input on the runner
// host: it may not run commands (exec plugins, auth providers) unless the
// admin allows it, and may not read files on the host (every file reference
// is refused: the job's own files do not exist yet when ferry prepares, and
// anything else belongs to the host).
//
// Every error is a build failure (failure.Build): it is caused by the
// variables' content or by the cluster they point at, which the user, not the
// runner's admin, controls. Only an API server error (HTTP 5xx) is a system
// failure, as a retry may help.
package kubecreds

import (
	"fmt"
	"sort"
	"strings"
	"time"

	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"gitlab.com/ferry-ci/ferry/pkg/failure"
	"gitlab.com/ferry-ci/ferry/pkg/namelist"
)

// Source names, as given to Options.Sources.
const (
	SourceKubeconfig  = "kubeconfig"
	SourceClusterVars = "cluster-vars"
)

// Options are the runner admin's settings (ferry flags --kube-*).
type Options struct {
	Variable         string        // name of the kubeconfig variable; "" means KUBECONFIG
	Sources          []string      // enabled sources; nil means all
	AllowExec        bool          // allow exec credential plugins and auth-provider entries
	RefuseInsecure   bool          // refuse insecure-skip-tls-verify instead of warning
	PreflightTimeout time.Duration // 0 means 5s
}

// DefaultOptions are ferry's defaults.
func DefaultOptions() Options {
	return Options{Variable: "KUBECONFIG", PreflightTimeout: 5 * time.Second}
}

func (o Options) variable() string {
	if o.Variable == "" {
		return "KUBECONFIG"
	}
	return o.Variable
}

func (o Options) enabled(source string) bool {
	if o.Sources == nil {
		return true
	}
	for _, s := range o.Sources {
		if s == source {
			return true
		}
	}
	return false
}

// Input is what kubecreds reads about the job.
type Input struct {
	Vars     map[string]string // job variables (CUSTOM_ENV_*), File variables as content
	FileVars map[string]bool   // keys of File variables (payload variables[].file)
	Scripts  []string          // every command line of the job (steps[].script)
}

// Creds are a job's Kubernetes credentials, ready to be written out.
type Creds struct {
	// Source says where the credentials came from, for the log, e.g.
	// "KUBECONFIG (base64)" or "KUBE_URL/KUBE_TOKEN/KUBE_CA_PEM_FILE".
	Source string
	// Variable is the variable errors should name.
	Variable string
	// Config is flattened (data inline, no file references) and has its
	// CurrentContext set, unless NeedsContext.
	Config *clientcmdapi.Config
	// NeedsContext is set when no context is selected but the job's script
	// selects one itself (kubectl config use-context): ferry then writes the
	// kubeconfig as it is and skips the preflight.
	NeedsContext bool
	// Secrets holds every value that must be masked, as is; mask them with
	// redact.AllVariants(Secrets...) to catch their encoded forms too.
	Secrets []string
	// Warnings are lines to print in the job log (e.g. insecure TLS).
	Warnings []string
	// Script is what the job's own commands do with the credentials.
	Script ScriptUse

	encoding Encoding // how the kubeconfig variable was written; "" for other sources
}

// errorf makes a build-failure error naming the variable.
func errorf(variable, format string, args ...any) error {
	return failure.Build(fmt.Errorf("ferry: %s: "+format, append([]any{variable}, args...)...))
}

// Load reads the job's Kubernetes credentials. It returns nil, nil when the
// job has no Kubernetes variable (from an enabled source).
func Load(in Input, opt Options) (*Creds, error) {
	name := opt.variable()
	var c *Creds
	var err error
	if v, ok := in.Vars[name]; ok && strings.TrimSpace(v) != "" && opt.enabled(SourceKubeconfig) {
		if looksLikeHostPath(v) {
			// A path to a kubeconfig on the runner host, set by the admin
			// (runner `environment`) for shell-executor style jobs: not a
			// credential ferry manages.
			return nil, nil
		}
		c, err = fromKubeconfigVar(name, v, in)
	} else if in.Vars["KUBE_URL"] != "" && opt.enabled(SourceClusterVars) {
		c, err = fromClusterVars(in)
	} else {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// A line that decodes the variable's *file* (cat "$KUBECONFIG" | base64 -d)
	// decodes the variable only when it is a File variable holding base64;
	// otherwise the file it reads is the kubeconfig ferry wrote.
	c.Script = detectScript(in.Scripts, name, in.FileVars[name] && c.encoding != "" && c.encoding != EncodingYAML)
	if err := selectContext(c, in, opt); err != nil {
		return nil, err
	}
	if err := checkPolicy(c, opt); err != nil {
		return nil, err
	}
	// Flatten after the policy check (which refuses every file reference):
	// nothing is read from disk, the config is only normalised.
	if err := clientcmdapi.FlattenConfig(c.Config); err != nil {
		return nil, errorf(c.Variable, "cannot inline the kubeconfig's data: %v", err)
	}
	// Plain values only: whoever builds the redactor expands them with
	// redact.AllVariants (stages does, for every secret of the job), and
	// expanding twice would multiply the patterns.
	c.Secrets = dedupe(append(c.Secrets, configSecrets(c.Config)...))
	return c, nil
}

// looksLikeHostPath reports whether a kubeconfig variable holds a file path
// rather than a kubeconfig: one line starting with / or ~/ that contains
// no base64-only character run long enough to be a kubeconfig.
func looksLikeHostPath(v string) bool {
	v = strings.TrimSpace(v)
	return !strings.ContainsAny(v, "\n ") && (strings.HasPrefix(v, "/") || strings.HasPrefix(v, "~/")) && len(v) < 4096 && strings.Count(v, "/") >= 2
}

func fromKubeconfigVar(name, value string, in Input) (*Creds, error) {
	data, enc, err := Decode(value)
	if err != nil {
		return nil, errorf(name, "%v", err)
	}
	cfg, err := parseKubeconfig(data)
	if err != nil {
		if enc == EncodingYAML {
			return nil, errorf(name, "the value is not a kubeconfig: %v", err)
		}
		return nil, errorf(name, "the value is valid %s but decodes to something that is not a kubeconfig: %v", enc, err)
	}
	kind := string(enc)
	if in.FileVars[name] {
		kind = "File variable, " + kind
	}
	return &Creds{
		Source:   fmt.Sprintf("%s (%s)", name, kind),
		Variable: name,
		Config:   cfg,
		Secrets:  []string{value, strings.TrimSpace(value), string(data)},
		encoding: enc,
	}, nil
}

// fromClusterVars builds a kubeconfig like the one GitLab's certificate-based
// integration generates (context "gitlab-deploy").
func fromClusterVars(in Input) (*Creds, error) {
	v := in.Vars
	server := strings.TrimSpace(v["KUBE_URL"])
	if !strings.HasPrefix(server, "https://") && !strings.HasPrefix(server, "http://") {
		return nil, errorf("KUBE_URL", "must be an https:// URL of the Kubernetes API server")
	}
	token := strings.TrimSpace(v["KUBE_TOKEN"])
	if token == "" {
		return nil, errorf("KUBE_TOKEN", "is not set, but KUBE_URL is: both are needed")
	}
	source := []string{"KUBE_URL", "KUBE_TOKEN"}
	cluster := &clientcmdapi.Cluster{Server: server}
	ca, caVar := v["KUBE_CA_PEM"], "KUBE_CA_PEM"
	if strings.TrimSpace(ca) == "" {
		ca, caVar = v["KUBE_CA_PEM_FILE"], "KUBE_CA_PEM_FILE"
	}
	if strings.TrimSpace(ca) != "" {
		if !strings.Contains(ca, "-----BEGIN CERTIFICATE-----") {
			return nil, errorf(caVar, "is not a PEM certificate (no -----BEGIN CERTIFICATE----- line)")
		}
		cluster.CertificateAuthorityData = []byte(ca)
		source = append(source, caVar)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["gitlab-deploy"] = cluster
	cfg.AuthInfos["gitlab-deploy"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["gitlab-deploy"] = &clientcmdapi.Context{
		Cluster: "gitlab-deploy", AuthInfo: "gitlab-deploy", Namespace: strings.TrimSpace(v["KUBE_NAMESPACE"]),
	}
	cfg.CurrentContext = "gitlab-deploy"
	return &Creds{
		Source:   strings.Join(source, "/"),
		Variable: "KUBE_TOKEN",
		Config:   cfg,
		Secrets:  []string{token},
	}, nil
}

// selectContext applies KUBE_CONTEXT and KUBE_NAMESPACE and checks that the
// selected context is complete.
func selectContext(c *Creds, in Input, opt Options) error {
	cfg := c.Config
	if want := strings.TrimSpace(in.Vars["KUBE_CONTEXT"]); want != "" {
		if _, ok := cfg.Contexts[want]; !ok {
			return errorf("KUBE_CONTEXT", "no context %q in %s; available contexts: %s", want, c.Variable, contextList(cfg))
		}
		cfg.CurrentContext = want
	}
	if cfg.CurrentContext == "" {
		if c.Script.SelectsContext {
			c.NeedsContext = true
			return nil
		}
		return errorf(c.Variable, "the kubeconfig selects no context (no current-context); set the variable KUBE_CONTEXT to one of its %d contexts: %s", len(cfg.Contexts), contextList(cfg))
	}
	ctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return errorf(c.Variable, "current-context %q is not among the contexts (%s); set KUBE_CONTEXT to one of them", cfg.CurrentContext, contextList(cfg))
	}
	if _, ok := cfg.Clusters[ctx.Cluster]; !ok {
		return errorf(c.Variable, "context %q names cluster %q, which is not defined", cfg.CurrentContext, ctx.Cluster)
	}
	if _, ok := cfg.AuthInfos[ctx.AuthInfo]; !ok && ctx.AuthInfo != "" {
		return errorf(c.Variable, "context %q names user %q, who is not defined", cfg.CurrentContext, ctx.AuthInfo)
	}
	if ns := strings.TrimSpace(in.Vars["KUBE_NAMESPACE"]); ns != "" && ctx.Namespace == "" {
		ctx.Namespace = ns
	}
	return nil
}

// contextList names the kubeconfig's contexts for an error: a few, then how
// many more (a GitLab agent kubeconfig can hold hundreds), and where to see
// them all.
func contextList(cfg *clientcmdapi.Config) string {
	names := make([]string, 0, len(cfg.Contexts))
	for n := range cfg.Contexts {
		names = append(names, n)
	}
	sort.Strings(names)
	s := namelist.Short(names, 0)
	if len(names) > namelist.DefaultShown+1 {
		s += " (`kubectl config get-contexts` on that kubeconfig lists them all)"
	}
	return s
}

// Namespace is the namespace of the selected context ("default" if none).
func (c *Creds) Namespace() string {
	if ctx, ok := c.Config.Contexts[c.Config.CurrentContext]; ok && ctx.Namespace != "" {
		return ctx.Namespace
	}
	return "default"
}

// Server is the API server URL of the selected context.
func (c *Creds) Server() string {
	if ctx, ok := c.Config.Contexts[c.Config.CurrentContext]; ok {
		if cl, ok := c.Config.Clusters[ctx.Cluster]; ok {
			return cl.Server
		}
	}
	return ""
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0]
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
