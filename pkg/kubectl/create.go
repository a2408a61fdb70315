package kubectl

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
)

// createFieldManager is kubectl create's field manager, so later `kubectl
// apply` by either tool sees the same owner.
const createFieldManager = "kubectl-create"

// createOutput holds the flags every create form shares.
type createOutput struct {
	dryRun string
	output string
}

func (c *createOutput) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.dryRun, "dry-run", "none", "none, client (print, send nothing) or server")
	fs.Lookup("dry-run").NoOptDefVal = "client"
	fs.StringVarP(&c.output, "output", "o", "", "name, yaml or json")
	fs.String("validate", "strict", "accepted for compatibility: the server validates")
	fs.Lookup("validate").NoOptDefVal = "strict"
	fs.Bool("save-config", false, "accepted for compatibility: ferry applies server-side, which needs no last-applied annotation")
	fs.String("field-manager", createFieldManager, "field manager of the created object")
}

func (c *createOutput) check() (apply.DryRun, error) {
	switch c.output {
	case "", "name", "yaml", "json":
	default:
		return 0, errUpstream // -o go-template=..., custom-columns, ...
	}
	return parseDryRun(c.dryRun)
}

// subcommand finds the first argument that is not a flag, as cobra finds
// kubectl's subcommands: `kubectl create -n shark secret generic x ...` is
// `create secret generic` with -n. It returns that word and the other
// arguments in their order; "" when there is none.
func (e *env) subcommand(args []string) (string, []string) {
	fs := e.flags("create")
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false)
	var co createOutput
	var src source
	co.register(fs)
	src.register(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		return "", args
	}
	i := len(args) - fs.NArg()
	if i > 0 && args[i-1] == "--" {
		return "", args
	}
	return args[i], append(append([]string{}, args[:i]...), args[i+1:]...)
}

func (e *env) create(ctx context.Context, args []string) error {
	switch sub, rest := e.subcommand(args); sub {
	case "namespace", "ns":
		return e.createGenerated(ctx, "namespace", rest)
	case "configmap", "cm":
		return e.createGenerated(ctx, "configmap", rest)
	case "secret":
		typ, rest := e.subcommand(rest)
		switch typ {
		case "generic", "docker-registry", "tls":
			return e.createGenerated(ctx, "secret "+typ, rest)
		}
		return errUpstream
	}
	fs := e.flags("create")
	var src source
	var co createOutput
	src.register(fs)
	co.register(fs)
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if len(src.files) == 0 && len(src.kustomize) == 0 {
		// create deployment|job|role|..., or kubectl's usage error.
		return errUpstream
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	dr, err := co.check()
	if err != nil {
		return err
	}
	objs, err := e.read(&src)
	if err != nil {
		return err
	}
	ns, explicit, err := e.resolvedNamespace()
	if err != nil {
		return err
	}
	var a *apply.Applier
	if dr != apply.DryRunClient {
		if a, err = e.getApplier(); err != nil {
			return err
		}
		if !a.Mappable(objs) {
			// The small kubectl, before any request: the engine has discovery.
			return errNeedsEngine
		}
	}
	if dr == apply.DryRunNone {
		if err := e.takeLock(ctx, ns, "create"); err != nil {
			return err
		}
	}
	failed := 0
	for i, o := range objs {
		if dr == apply.DryRunClient {
			if err := e.printCreated(o.Unstructured, o.Unstructured, co.output, dr, i); err != nil {
				return err
			}
			continue
		}
		if err := e.createOne(ctx, a, o, ns, explicit, dr, co.output, i); err != nil {
			failed++
		}
	}
	if failed > 0 {
		return exitError{1}
	}
	return nil
}

// createOne creates one object (kubectl create semantics: an existing
// object is an error) and prints kubectl's line for it.
func (e *env) createOne(ctx context.Context, a *apply.Applier, o *apply.Object, ns string, explicit bool, dr apply.DryRun, output string, i int) error {
	gvk := o.GroupVersionKind()
	m, err := a.Mapping(gvk)
	if err != nil {
		// A CRD created a moment ago (seed 001: CRDs, then `create -f
		// issuer.yml`) is not in the cached discovery yet.
		a.ResetMapper()
		if m, err = a.Mapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			fmt.Fprintf(e.stderr, "error: resource mapping not found for name: %q namespace: %q from %q: no matches for kind %q in version %q\nensure CRDs are installed first\n",
				o.GetName(), o.GetNamespace(), o.Location(), gvk.Kind, gvk.GroupVersion().String())
			return err
		}
	}
	ri := a.Dynamic().Resource(m.Resource)
	opts := metav1.CreateOptions{FieldManager: createFieldManager}
	if dr == apply.DryRunServer {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var created *unstructured.Unstructured
	if m.Scope.Name() == "namespace" {
		objNS := o.GetNamespace()
		switch {
		case objNS == "":
			o.SetNamespace(ns)
		case explicit && objNS != ns:
			err := fmt.Errorf("the namespace from the provided object %q does not match the namespace %q. You must pass '--namespace=%s' to perform this operation.", objNS, ns, objNS)
			fmt.Fprintln(e.stderr, "error: "+err.Error())
			return err
		}
		created, err = ri.Namespace(o.GetNamespace()).Create(ctx, o.Unstructured, opts)
	} else {
		created, err = ri.Create(ctx, o.Unstructured, opts)
	}
	if err != nil {
		var se apierrors.APIStatus
		if errors.As(err, &se) {
			st := se.Status()
			fmt.Fprintf(e.stderr, "Error from server (%s): error when creating %q: %s\n", st.Reason, o.Source, st.Message)
		} else {
			fmt.Fprintf(e.stderr, "error: error when creating %q: %v\n", o.Source, err)
		}
		return err
	}
	return e.printCreated(created, created, output, dr, i)
}

// printCreated prints kubectl create's result for one object: its line
// ("secret/x created (dry run)") or, with -o, the object. v is what -o
// yaml|json prints: the typed object for generated ones, so the field order
// of -o json is kubectl's.
func (e *env) printCreated(u *unstructured.Unstructured, v any, output string, dr apply.DryRun, i int) error {
	switch output {
	case "", "name":
		return e.resultLine(u, "created", output, dr)
	case "json":
		b, err := json.MarshalIndent(v, "", "    ")
		if err != nil {
			return fmt.Errorf("printing json: %w", err)
		}
		_, err = e.stdout.Write(append(b, '\n'))
		return err
	default:
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("printing yaml: %w", err)
		}
		if i > 0 {
			// kubectl's YAML printer separates documents.
			b = append([]byte("---\n"), b...)
		}
		_, err = e.stdout.Write(b)
		return err
	}
}

// createGenerated is `create namespace|configmap|secret ... NAME`: the
// object is built here from flags, as kubectl's generators do, so
// `create secret docker-registry ... --dry-run=client -o yaml | kubectl
// apply -f -` (GitLab's registry pull secret recipe) works offline.
func (e *env) createGenerated(ctx context.Context, what string, args []string) error {
	fs := e.flags("create " + what)
	var co createOutput
	co.register(fs)
	var (
		literals, files, envFiles      []string
		typ, server, user, pass, email string
		cert, key                      string
	)
	switch what {
	case "configmap", "secret generic":
		fs.StringArrayVar(&literals, "from-literal", nil, "key=value")
		fs.StringSliceVar(&files, "from-file", nil, "[key=]file or directory")
		fs.StringSliceVar(&envFiles, "from-env-file", nil, "file of KEY=value lines")
		if what == "secret generic" {
			fs.StringVar(&typ, "type", "", "the secret's type")
		}
	case "secret docker-registry":
		fs.StringVar(&server, "docker-server", "https://index.docker.io/v1/", "registry address")
		fs.StringVar(&user, "docker-username", "", "registry user")
		fs.StringVar(&pass, "docker-password", "", "registry password")
		fs.StringVar(&email, "docker-email", "", "registry email")
		fs.StringSliceVar(&files, "from-file", nil, "[key=]file with a docker config")
	case "secret tls":
		fs.StringVar(&cert, "cert", "", "PEM certificate file")
		fs.StringVar(&key, "key", "", "PEM key file")
	}
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("exactly one NAME is required, got %d", fs.NArg())
	}
	name := fs.Arg(0)
	if len(envFiles) > 0 && (len(files) > 0 || len(literals) > 0) {
		// kubectl refuses the mix rather than pick an order for duplicate keys.
		return errors.New("from-env-file cannot be combined with from-file or from-literal")
	}
	dr, err := co.check()
	if err != nil {
		return err
	}
	ns, explicit, err := e.resolvedNamespace()
	if err != nil {
		return err
	}
	// kubectl writes the namespace into the object only when -n was given.
	meta := metav1.ObjectMeta{Name: name}
	if explicit {
		meta.Namespace = ns
	}
	var obj runtime.Object
	switch what {
	case "namespace":
		obj = &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
	case "configmap":
		cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: meta}
		if err := fillData(name, "ConfigMap", literals, files, envFiles, func(k string, v []byte) error {
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			// Text goes to data, anything else to binaryData, as kubectl does.
			if utf8.Valid(v) {
				cm.Data[k] = string(v)
			} else {
				if cm.BinaryData == nil {
					cm.BinaryData = map[string][]byte{}
				}
				cm.BinaryData[k] = v
			}
			return nil
		}); err != nil {
			return err
		}
		obj = cm
	case "secret generic":
		s := secret(meta, corev1.SecretType(typ))
		if err := fillData(name, "Secret", literals, files, envFiles, func(k string, v []byte) error { s.Data[k] = v; return nil }); err != nil {
			return err
		}
		obj = s
	case "secret docker-registry":
		s := secret(meta, corev1.SecretTypeDockerConfigJson)
		if len(files) == 0 {
			if user == "" || pass == "" || server == "" {
				return errors.New("either --from-file or the combination of --docker-username, --docker-password and --docker-server is required")
			}
			cfg, err := dockerConfigJSON(server, user, pass, email)
			if err != nil {
				return err
			}
			s.Data[corev1.DockerConfigJsonKey] = cfg
		} else if err := fillData(name, "Secret", nil, files, nil, func(k string, v []byte) error { s.Data[k] = v; return nil }); err != nil {
			return err
		}
		obj = s
	case "secret tls":
		if cert == "" || key == "" {
			return errors.New("key and cert must be specified")
		}
		c, err := os.ReadFile(cert)
		if err != nil {
			return fmt.Errorf("reading --cert: %w", err)
		}
		k, err := os.ReadFile(key)
		if err != nil {
			return fmt.Errorf("reading --key: %w", err)
		}
		if _, err := tls.X509KeyPair(c, k); err != nil {
			return fmt.Errorf("--cert and --key do not make a key pair: %w", err)
		}
		s := secret(meta, corev1.SecretTypeTLS)
		s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey] = c, k
		obj = s
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("converting the %s: %w", what, err)
	}
	u := &unstructured.Unstructured{Object: m}
	if dr == apply.DryRunClient {
		return e.printCreated(u, obj, co.output, dr, 0)
	}
	a, err := e.getApplier()
	if err != nil {
		return err
	}
	mapping, err := a.Mapping(u.GroupVersionKind()) // built in: no discovery
	if err != nil {
		return err
	}
	if dr == apply.DryRunNone {
		if err := e.takeLock(ctx, ns, "create "+what); err != nil {
			return err
		}
	}
	opts := metav1.CreateOptions{FieldManager: createFieldManager}
	if dr == apply.DryRunServer {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	ri := a.Dynamic().Resource(mapping.Resource)
	var created *unstructured.Unstructured
	if what == "namespace" {
		created, err = ri.Create(ctx, u, opts)
	} else {
		u.SetNamespace(ns)
		created, err = ri.Namespace(ns).Create(ctx, u, opts)
	}
	switch {
	case err == nil:
		return e.printCreated(created, created.Object, co.output, dr, 0)
	case strings.HasPrefix(what, "secret"):
		// kubectl's generators word a server's refusal as their own error
		// ("error: failed to create secret secrets "x" already exists"),
		// create namespace does not.
		return e.printErrors([]error{fmt.Errorf("failed to create secret %w", err)})
	case what == "configmap":
		return e.printErrors([]error{fmt.Errorf("failed to create configmap: %w", err)})
	default:
		return err
	}
}

func secret(meta metav1.ObjectMeta, typ corev1.SecretType) *corev1.Secret {
	return &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}, ObjectMeta: meta, Type: typ, Data: map[string][]byte{}}
}

// dockerConfigJSON is the .dockerconfigjson kubectl writes: one "auths"
// entry with the user, password, email (when given) and their base64 auth.
func dockerConfigJSON(server, user, pass, email string) ([]byte, error) {
	type entry struct {
		Username string `json:"username,omitempty"`
		Password string `json:"password,omitempty"`
		Email    string `json:"email,omitempty"`
		Auth     string `json:"auth,omitempty"`
	}
	cfg := struct {
		Auths map[string]entry `json:"auths"`
	}{Auths: map[string]entry{server: {user, pass, email, base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding the docker config: %w", err)
	}
	return b, nil
}

// fillData adds --from-literal, --from-file and --from-env-file sources
// with kubectl's key rules: valid ConfigMap/Secret key names, no key twice.
func fillData(name, kind string, literals, files, envFiles []string, put func(string, []byte) error) error {
	seen := map[string]bool{}
	add := func(k string, v []byte) error {
		if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
			return fmt.Errorf("%q is not a valid key name for a %s: %s", k, kind, strings.Join(errs, ","))
		}
		if seen[k] && kind == "Secret" {
			return fmt.Errorf("cannot add key %s, another key by that name already exists", k)
		}
		if seen[k] {
			return fmt.Errorf("cannot add key %q, another key by that name already exists in Data for %s %q", k, kind, name)
		}
		seen[k] = true
		return put(k, v)
	}
	for _, l := range literals {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("invalid literal source %v, expected key=value", l)
		}
		if err := add(k, []byte(v)); err != nil {
			return err
		}
	}
	for _, f := range files {
		k, p, err := fileSource(f)
		if err != nil {
			return err
		}
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("error reading %s: %w", p, err)
		}
		if !st.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("error reading %s: %w", p, err)
			}
			if err := add(k, data); err != nil {
				return err
			}
			continue
		}
		if k != path.Base(filepath.ToSlash(f)) {
			return fmt.Errorf("cannot give a key name for a directory path: %s", p)
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return fmt.Errorf("error listing files in %s: %w", p, err)
		}
		for _, ent := range ents {
			if !ent.Type().IsRegular() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(p, ent.Name()))
			if err != nil {
				return fmt.Errorf("error reading %s: %w", ent.Name(), err)
			}
			if err := add(ent.Name(), data); err != nil {
				return err
			}
		}
	}
	for _, f := range envFiles {
		if err := readEnvFile(f, func(k, v string) error { return add(k, []byte(v)) }); err != nil {
			return err
		}
	}
	return nil
}

// fileSource splits "[key=]path" as kubectl does.
func fileSource(s string) (string, string, error) {
	switch n := strings.Count(s, "="); {
	case n == 0:
		return path.Base(filepath.ToSlash(s)), s, nil
	case n > 1:
		return "", "", errors.New("key names or file paths cannot contain '='")
	case strings.HasPrefix(s, "="):
		return "", "", fmt.Errorf("key name for file path %v missing", s[1:])
	case strings.HasSuffix(s, "="):
		return "", "", fmt.Errorf("file path for key name %v missing", s[:len(s)-1])
	}
	k, p, _ := strings.Cut(s, "=")
	return k, p, nil
}

// readEnvFile reads KEY=value lines like kubectl's --from-env-file: blank
// and # lines skipped, leading space trimmed, the value kept as written;
// a bare KEY takes its value from the environment (empty when unset).
func readEnvFile(p string, put func(k, v string) error) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("error reading %s: %w", p, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		b := sc.Bytes()
		if n == 1 {
			b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
		}
		line := strings.TrimLeftFunc(string(b), unicode.IsSpace)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if errs := validation.IsEnvVarName(k); len(errs) > 0 {
			return fmt.Errorf("%s:%d: %q is not a valid key name: %s", p, n, k, strings.Join(errs, ";"))
		}
		if !ok {
			v = os.Getenv(k) // kubectl: unset gives an empty value
		}
		if err := put(k, v); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("error reading %s: %w", p, err)
	}
	return nil
}
