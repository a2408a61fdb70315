package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
	"gitlab.com/ferry-ci/ferry/pkg/deployguard"
)

// source holds the manifest flags shared by apply, diff and create.
type source struct {
	files     []string
	kustomize []string
	recursive bool
	envsubst  bool
}

func (s *source) register(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&s.files, "filename", "f", nil, "file, directory or - (stdin) with the objects")
	fs.StringArrayVarP(&s.kustomize, "kustomize", "k", nil, "kustomization directory")
	fs.BoolVarP(&s.recursive, "recursive", "R", false, "descend into subdirectories of -f directories")
	fs.BoolVar(&s.envsubst, "envsubst", false, "replace ${VAR} in manifests with the job's variables (ferry only; an unset variable is an error)")
}

// read parses the manifests; -f or -k is required, as in kubectl.
func (e *env) read(s *source) ([]*apply.Object, error) {
	if len(s.files) == 0 && len(s.kustomize) == 0 {
		return nil, errors.New("must specify one of -f and -k")
	}
	if len(s.kustomize) > 0 && e.rt.Kustomize == nil {
		return nil, errNeedsEngine
	}
	opts := apply.ReadOptions{Filenames: s.files, Kustomize: s.kustomize, Kustomizer: e.rt.Kustomize, Recursive: s.recursive, Stdin: e.stdin}
	if s.envsubst {
		opts.Envsubst = os.LookupEnv
	}
	objs, err := apply.ReadManifests(opts)
	if err != nil {
		// One "error: file:line: ..." line per problem, as the engine joins them.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(e.stderr, "error: "+line)
		}
		return nil, exitError{1}
	}
	if len(objs) == 0 {
		return nil, errors.New("no objects passed to apply")
	}
	return objs, nil
}

// annotations are the traceability annotations, controlled by
// FERRY_ANNOTATIONS: "commit" (default: project and commit), "job" (also the
// pipeline and job URLs), "off".
func annotations() (map[string]string, error) {
	switch mode := os.Getenv("FERRY_ANNOTATIONS"); mode {
	case "", "commit":
		return apply.TraceAnnotations(os.LookupEnv, false), nil
	case "job":
		return apply.TraceAnnotations(os.LookupEnv, true), nil
	case "off":
		return nil, nil
	default:
		return nil, fmt.Errorf("FERRY_ANNOTATIONS=%q: want commit, job or off", mode)
	}
}

// target is what apply and diff write with: the default namespace, the
// traceability annotations and the engine.
type target struct {
	ns          string
	explicit    bool
	annotations map[string]string
	applier     *apply.Applier
	// guard is the deploy rules of the job (pkg/deployguard); its records
	// are in annotations when it is active.
	guard *deployguard.Guard
}

func (e *env) writeTarget() (*target, error) {
	ann, err := annotations()
	if err != nil {
		return nil, err
	}
	g, err := deployguard.FromEnv(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	if g.Active() {
		// Recorded whatever FERRY_ANNOTATIONS says: the rules read them.
		if ann == nil {
			ann = map[string]string{}
		}
		for k, v := range g.ID.Records() {
			ann[k] = v
		}
	}
	ns, explicit, err := e.resolvedNamespace()
	if err != nil {
		return nil, err
	}
	a, err := e.getApplier()
	if err != nil {
		return nil, err
	}
	return &target{ns: ns, explicit: explicit, annotations: ann, applier: a, guard: g}, nil
}

func (e *env) apply(ctx context.Context, args []string) error {
	fs := e.flags("apply")
	var (
		src                     source
		dryRun, output, manager string
		validate                string
		serverSide, force, wait bool
		timeout                 time.Duration
		prune, pruneAll         bool
		applySet, selector      string
		pruneAllow              []string
	)
	src.register(fs)
	fs.StringVar(&dryRun, "dry-run", "none", "none, client or server")
	fs.Lookup("dry-run").NoOptDefVal = "client"
	fs.StringVarP(&output, "output", "o", "", "name, yaml or json")
	fs.StringVar(&manager, "field-manager", apply.DefaultFieldManager, "server-side apply field manager")
	fs.StringVar(&validate, "validate", "strict", "strict (true), warn or ignore (false): the server's field validation")
	fs.Lookup("validate").NoOptDefVal = "strict"
	fs.BoolVar(&serverSide, "server-side", false, "kubectl's server-side apply semantics: conflicts with other field managers are errors; words are serverside-applied")
	fs.BoolVar(&force, "force-conflicts", false, "take over fields owned by other field managers")
	fs.BoolVar(&wait, "wait", false, "wait until the applied objects are ready (kstatus)")
	fs.DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait waits")
	fs.BoolVar(&prune, "prune", false, "delete objects of the set (--applyset, or -l / --all) that the manifests no longer contain")
	fs.StringVar(&applySet, "applyset", "", "the ApplySet parent: NAME (a Secret), secrets/NAME or configmaps/NAME, in -n's namespace")
	fs.StringVarP(&selector, "selector", "l", "", "apply (and prune) only objects matching this label selector")
	fs.BoolVar(&pruneAll, "all", false, "with --prune and no --applyset: prune every object of kubectl's default kinds made by apply")
	fs.StringArrayVar(&pruneAllow, "prune-allowlist", nil, "not supported by ferry")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if len(pruneAllow) > 0 {
		return errors.New("--prune-allowlist is not supported by ferry's kubectl; use --applyset")
	}
	switch {
	case applySet != "" && !prune:
		return errors.New("--applyset requires --prune")
	case prune && applySet != "" && pruneAll:
		return errors.New("--all is incompatible with --applyset")
	case prune && applySet != "" && selector != "":
		return errors.New("--selector is incompatible with --applyset")
	case prune && applySet == "" && !pruneAll && selector == "":
		return errors.New("all resources selected for prune without explicitly passing --all. To prune all resources, pass the --all flag. If you did not mean to prune all resources, specify a label selector")
	case prune && applySet == "" && serverSide:
		return errors.New("--prune is in alpha and doesn't currently work on objects created by server-side apply")
	case pruneAll && selector != "":
		return errors.New("cannot set --all and --selector at the same time")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	dr, err := parseDryRun(dryRun)
	if err != nil {
		return err
	}
	if force && !serverSide {
		return errors.New("--force-conflicts only works with --server-side")
	}
	if dr == apply.DryRunClient && serverSide {
		return errors.New("--dry-run=client doesn't work with --server-side (did you mean --dry-run=server instead?)")
	}
	fv, err := parseValidate(validate)
	if err != nil {
		return err
	}
	if output != "" && output != "name" && output != "yaml" && output != "json" {
		return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,name,yaml", output)
	}
	// The deploy lock (never for a dry run), taken while the manifests are
	// read and the client is built, held before the first request.
	lock := &lockAhead{cancel: func() {}}
	if dr == apply.DryRunNone {
		lock = e.takeLockAhead(ctx, "apply")
	}
	defer lock.cancel()
	objs, err := e.read(&src)
	if err != nil {
		if errors.Is(err, errNeedsEngine) {
			// The engine redoes the call: it finds the lock taken.
			if lerr := lock.wait(); lerr != nil {
				return lerr
			}
		}
		return err
	}
	if selector != "" {
		if objs, err = filterLabels(objs, selector); err != nil {
			return err
		}
	}
	t, err := e.writeTarget()
	if err != nil {
		return err
	}
	a := t.applier
	if !a.Mappable(objs) || (prune && e.rt.Discovery == nil) {
		// The small kubectl, before any request: the engine has discovery
		// (and finds the lock taken).
		if err := lock.wait(); err != nil {
			return err
		}
		return errNeedsEngine
	}
	var warm chan struct{}
	if lock.pending() {
		// While the holder takes the lock, open this call's own
		// connection to the API server (its TLS handshake) with a read
		// that needs no lock: the first request below finds it open.
		warm = make(chan struct{})
		go func() {
			defer close(warm)
			a.ServerVersion(ctx)
		}()
	}
	if err := lock.wait(); err != nil {
		return err
	}
	if warm != nil {
		// A lock taken before that handshake ended: requests sent now
		// would each dial a connection of their own, and all but one
		// would be closed unused (the API server logs each: "error
		// reading preface").
		<-warm
	}
	opts := apply.ApplyOptions{
		Namespace: t.ns, NamespaceExplicit: t.explicit, FieldManager: manager, Force: force,
		DryRun: dr, ServerSide: serverSide, Annotations: t.annotations, FieldValidation: fv, ErrOut: e.stderr,
	}
	if output == "" {
		opts.Out = e.stdout
	}
	if t.guard.Active() {
		opts.Guard = func(target string, live map[string]string) (string, error) {
			d, err := t.guard.Check(target, live)
			return d.Note, err
		}
	}
	var set *apply.ApplySet
	if applySet != "" {
		// The parent's namespace is -n's only, as kubectl (not the kubeconfig's).
		ns := ""
		if t.explicit {
			ns = t.ns
		}
		if set, err = a.OpenApplySet(applySet, ns); err != nil {
			return err
		}
		if err := set.Begin(ctx, objs, opts); err != nil {
			return err
		}
	}
	res, err := a.Apply(ctx, objs, opts)
	if err != nil {
		return err
	}
	if prune && res.Err() == nil {
		pruneOpts := opts
		pruneOpts.Out = e.stdout
		if set != nil {
			err = set.Prune(ctx, pruneOpts)
		} else {
			err = a.PruneSelector(ctx, res, selector, pruneOpts)
		}
		if err != nil {
			return err
		}
	}
	if output != "" {
		var live []*unstructured.Unstructured
		for _, it := range res.Items {
			if it.Err != nil {
				continue
			}
			if output == "name" {
				fmt.Fprintln(e.stdout, it.Object.Ref())
				continue
			}
			if it.Live != nil {
				live = append(live, it.Live)
			} else {
				live = append(live, it.Object.Unstructured)
			}
		}
		if output != "name" {
			if err := printObjects(e.stdout, output, live); err != nil {
				return err
			}
		}
	}
	if res.Err() != nil {
		return exitError{1}
	}
	if wait && dr == apply.DryRunNone {
		wctx, cancel := timeoutCtx(ctx, 0)
		defer cancel()
		if err := a.Wait(wctx, objs, timeout, e.stdout); err != nil {
			return err
		}
	}
	return nil
}

// filterLabels keeps the objects matching selector, as kubectl apply -l.
func filterLabels(objs []*apply.Object, selector string) ([]*apply.Object, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, err
	}
	var out []*apply.Object
	for _, o := range objs {
		if sel.Matches(labels.Set(o.GetLabels())) {
			out = append(out, o)
		}
	}
	return out, nil
}

func parseDryRun(s string) (apply.DryRun, error) {
	switch s {
	case "none", "false", "":
		return apply.DryRunNone, nil
	case "client", "true":
		return apply.DryRunClient, nil
	case "server":
		return apply.DryRunServer, nil
	}
	return 0, fmt.Errorf(`invalid dry-run value (%s). Must be "none", "server", or "client"`, s)
}

// parseValidate maps kubectl's --validate values to the server's
// fieldValidation; ferry has no client-side schema check, the server does it.
func parseValidate(s string) (string, error) {
	switch strings.ToLower(s) {
	case "strict", "true":
		return "Strict", nil
	case "warn":
		return "Warn", nil
	case "ignore", "false":
		return "Ignore", nil
	}
	return "", fmt.Errorf("invalid - validate option %q; must be one of: strict (or true), warn, ignore (or false)", s)
}

func (e *env) diff(ctx context.Context, args []string) error {
	fs := e.flags("diff")
	var (
		src     source
		manager string
		force   bool
	)
	src.register(fs)
	fs.StringVar(&manager, "field-manager", apply.DefaultFieldManager, "server-side apply field manager")
	fs.BoolVar(&force, "force-conflicts", false, "take over fields owned by other field managers")
	var serverSide bool
	fs.BoolVar(&serverSide, "server-side", false, "diff what `apply --server-side` would do")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	objs, err := e.read(&src)
	if errors.Is(err, errNeedsEngine) {
		return err
	}
	if err != nil {
		return exitError{2}
	}
	t, err := e.writeTarget()
	if err != nil {
		return err
	}
	if !t.applier.Mappable(objs) {
		return errNeedsEngine
	}
	res, err := t.applier.Diff(ctx, objs, apply.DiffOptions{Namespace: t.ns, NamespaceExplicit: t.explicit,
		FieldManager: manager, Force: force, ServerSide: serverSide, Annotations: t.annotations, Out: e.stdout, ErrOut: e.stderr})
	if err != nil {
		fmt.Fprintln(e.stderr, formatError(err))
		return exitError{2}
	}
	if res.Result != nil && res.Err() != nil {
		return exitError{2}
	}
	if res.Changed {
		return exitError{1}
	}
	return nil
}

// refOf is kubectl's "kind.group/name" for a live object.
func refOf(u *unstructured.Unstructured, _ string) string {
	gvk := u.GroupVersionKind()
	kind := strings.ToLower(gvk.Kind)
	if gvk.Group != "" {
		kind += "." + gvk.Group
	}
	return kind + "/" + u.GetName()
}

// printObjects prints objects as kubectl -o yaml|json: one object as is,
// several as a v1 List.
func printObjects(w interface{ Write([]byte) (int, error) }, format string, objs []*unstructured.Unstructured) error {
	var v any
	if len(objs) == 1 {
		v = objs[0].Object
	} else {
		items := make([]any, 0, len(objs))
		for _, o := range objs {
			items = append(items, o.Object)
		}
		v = map[string]any{"apiVersion": "v1", "kind": "List", "items": items, "metadata": map[string]any{"resourceVersion": ""}}
	}
	var out []byte
	var err error
	if format == "json" {
		out, err = json.MarshalIndent(v, "", "    ")
		out = append(out, '\n')
	} else {
		out, err = yaml.Marshal(v)
	}
	if err != nil {
		return fmt.Errorf("printing %s: %w", format, err)
	}
	_, err = w.Write(out)
	return err
}
