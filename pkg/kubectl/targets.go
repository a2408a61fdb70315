package kubectl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
)

// ref is one resource type, with the names asked for (none: all of them).
type ref struct {
	gvr     schema.GroupVersionResource
	gvk     schema.GroupVersionKind
	mapping *meta.RESTMapping
	name    string
}

// allResources is what kubectl's "all" category expands to.
var allResources = []string{"pods", "services", "daemonsets.apps", "deployments.apps", "replicasets.apps",
	"statefulsets.apps", "horizontalpodautoscalers.autoscaling", "cronjobs.batch", "jobs.batch", "replicationcontrollers"}

// resolveType maps a resource argument ("deploy", "deployments.apps", "svc",
// "Deployment") to its mapping through discovery, short names included.
func resolveType(a *apply.Applier, arg string) (*meta.RESTMapping, error) {
	m := a.Mapper() // discovery with kubectl's short names
	gr := schema.ParseGroupResource(strings.ToLower(arg))
	gvr, err := m.ResourceFor(gr.WithVersion(""))
	if err != nil {
		return nil, fmt.Errorf("the server doesn't have a resource type %q", arg)
	}
	gvk, err := m.KindFor(gvr)
	if err != nil {
		return nil, fmt.Errorf("the server doesn't have a resource type %q", arg)
	}
	return m.RESTMapping(gvk.GroupKind(), gvk.Version)
}

// resolveRefs turns `kind name...`, `kind1,kind2` or `kind/name...`
// arguments into refs, as kubectl's resource builder does.
func (e *env) resolveRefs(a *apply.Applier, args []string) ([]ref, error) {
	if len(args) == 0 {
		return nil, errors.New("you must specify the type of resource to get. Use \"kubectl api-resources\" for a complete list of supported resources")
	}
	var out []ref
	add := func(typ, name string) error {
		types := strings.Split(typ, ",")
		if typ == "all" {
			types = allResources
		}
		for _, t := range types {
			m, err := resolveType(a, t)
			if err != nil {
				return err
			}
			out = append(out, ref{gvr: m.Resource, gvk: m.GroupVersionKind, mapping: m, name: name})
		}
		return nil
	}
	if strings.Contains(args[0], "/") {
		for _, arg := range args {
			typ, name, ok := strings.Cut(arg, "/")
			if !ok {
				return nil, fmt.Errorf("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kubectl get resource/<resource_name>' instead of 'kubectl get resource resource/<resource_name>'")
			}
			if err := add(typ, name); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	if len(args) == 1 {
		return out, add(args[0], "")
	}
	for _, name := range args[1:] {
		if err := add(args[0], name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fetch gets one named object or lists a type.
func fetch(ctx context.Context, a *apply.Applier, r ref, ns, selector string) ([]*unstructured.Unstructured, error) {
	ri := a.Dynamic().Resource(r.gvr)
	var rc interface {
		Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
		List(context.Context, metav1.ListOptions) (*unstructured.UnstructuredList, error)
	} = ri
	if r.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		rc = ri.Namespace(ns)
	}
	if r.name != "" {
		o, err := rc.Get(ctx, r.name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return []*unstructured.Unstructured{o}, nil
	}
	list, err := rc.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

// liveObj is one live object a verb acts on, with the resource it came
// from; or, when err is set, a named object that could not be fetched
// (NotFound), kept in its place among the others because kubectl reports
// it there.
type liveObj struct {
	obj     *unstructured.Unstructured
	mapping *meta.RESTMapping
	err     error
}

// resourceName is kubectl's info.ObjectName(): "deployments/web", the
// resource without its group, used in wait's and set's messages.
func (t liveObj) resourceName() string { return t.mapping.Resource.Resource + "/" + t.obj.GetName() }

// client is the dynamic client for the target's resource and namespace.
func (t liveObj) client(a *apply.Applier) dynamic.ResourceInterface {
	ri := a.Dynamic().Resource(t.mapping.Resource)
	if t.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return ri.Namespace(t.obj.GetNamespace())
	}
	return ri
}

// selection are the flags that pick objects beyond `kind/name` arguments.
type selection struct {
	selector string
	all      bool
}

func (s *selection) register(fs *pflag.FlagSet, withAll bool) {
	fs.StringVarP(&s.selector, "selector", "l", "", "label selector")
	if withAll {
		fs.BoolVar(&s.all, "all", false, "every object of the given types in the namespace")
	}
}

// targets fetches the objects that `kind/name`, `kind name...` or `kind`
// arguments name, as kubectl's resource builder does. A bare type lists the
// namespace (with -l) and needs --all or -l unless typeOnlyLists (rollout
// restart restarts every Deployment when given `deployment`). A named object
// that cannot be fetched is returned in its place with its error, so the
// verb decides, as kubectl's do differently, whether to act on the others.
func (e *env) targets(ctx context.Context, a *apply.Applier, args []string, sel selection, typeOnlyLists bool) ([]liveObj, error) {
	if len(args) == 0 {
		return nil, errors.New("You must provide one or more resources by argument or filename.\nExample resource specifications include:\n   '-f rsrc.yaml'\n   '--filename=rsrc.json'\n   '<resource> <name>'\n   '<resource>'")
	}
	ns, _, err := e.resolvedNamespace()
	if err != nil {
		return nil, err
	}
	refs, err := e.resolveRefs(a, args)
	if err != nil {
		return nil, err
	}
	var out []liveObj
	for _, r := range refs {
		switch {
		case r.name == "" && !typeOnlyLists && !sel.all && sel.selector == "":
			return nil, errors.New("resource(s) were provided, but no name was specified")
		case r.name != "" && sel.selector != "":
			return nil, errors.New("name cannot be provided when a selector is specified")
		}
		got, err := fetch(ctx, a, r, ns, sel.selector)
		if err != nil {
			if r.name == "" {
				return nil, err
			}
			out = append(out, liveObj{mapping: r.mapping, err: err})
			continue
		}
		for _, o := range got {
			out = append(out, liveObj{obj: o, mapping: r.mapping})
		}
	}
	return out, nil
}

// printErrors prints what a verb collected the way kubectl's aggregate
// error does: one error alone as "error: ..." (an API error as "Error from
// server (Reason): ..."), several one a line as they are. Only an API error
// itself, not one wrapped with context, prints as "Error from server":
// kubectl says "error: failed to patch: deployments.apps ... is forbidden".
func (e *env) printErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	for _, err := range errs {
		msg := err.Error()
		if se, ok := err.(apierrors.APIStatus); ok {
			msg = formatError(se.(error))
		} else if len(errs) == 1 && !strings.HasPrefix(msg, "error: ") {
			msg = "error: " + msg
		}
		fmt.Fprintln(e.stderr, msg)
	}
	return exitError{1}
}

// resultLine prints kubectl's line for an object a verb changed:
// "deployment.apps/web restarted", just the reference with -o name, the
// object with -o yaml|json.
func (e *env) resultLine(u *unstructured.Unstructured, verb, output string, dr apply.DryRun) error {
	switch output {
	case "":
		suffix := ""
		switch dr {
		case apply.DryRunClient:
			suffix = " (dry run)"
		case apply.DryRunServer:
			suffix = " (server dry run)"
		}
		_, err := fmt.Fprintf(e.stdout, "%s %s%s\n", refOf(u, ""), verb, suffix)
		return err
	case "name":
		_, err := fmt.Fprintln(e.stdout, refOf(u, ""))
		return err
	default:
		return printObjects(e.stdout, output, []*unstructured.Unstructured{u})
	}
}

func checkOutput(output string) error {
	switch output {
	case "", "name", "yaml", "json":
		return nil
	}
	return errUpstream // -o go-template=..., custom-columns, ...
}
