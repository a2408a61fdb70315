package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/jsonpath"

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

func (e *env) get(ctx context.Context, args []string) error {
	fs := e.flags("get")
	var (
		output        string
		allNamespaces bool
		selector      string
		ignoreNF      bool
	)
	fs.StringVarP(&output, "output", "o", "", "wide, name, yaml, json or jsonpath=TEMPLATE")
	fs.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list across all namespaces")
	fs.StringVarP(&selector, "selector", "l", "", "label selector")
	fs.BoolVar(&ignoreNF, "ignore-not-found", false, "a missing named object is not an error")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	switch {
	case output == "" || output == "wide" || output == "name" || output == "yaml" || output == "json" || strings.HasPrefix(output, "jsonpath="):
	default:
		// custom-columns, go-template, jsonpath-file, ...: kubectl's printers.
		return errUpstream
	}
	ns, _, err := e.resolvedNamespace()
	if err != nil {
		return err
	}
	if allNamespaces {
		ns = ""
	}
	a, err := e.getApplier()
	if err != nil {
		return err
	}
	refs, err := e.resolveRefs(a, fs.Args())
	if err != nil {
		return err
	}
	if output == "" || output == "wide" {
		return e.getTables(ctx, a, refs, ns, selector, output == "wide", len(refs) > 1, ignoreNF)
	}
	var objs []*unstructured.Unstructured
	for _, r := range refs {
		got, err := fetch(ctx, a, r, ns, selector)
		if err != nil {
			if ignoreNF && apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		objs = append(objs, got...)
	}
	switch {
	case output == "name":
		for _, o := range objs {
			fmt.Fprintln(e.stdout, refOf(o, ""))
		}
		return nil
	case strings.HasPrefix(output, "jsonpath="):
		return printJSONPath(e.stdout, strings.TrimPrefix(output, "jsonpath="), objs, len(refs) == 1 && refs[0].name != "")
	default:
		if len(refs) == 1 && refs[0].name != "" && len(objs) == 1 {
			return printObjects(e.stdout, output, objs)
		}
		return printList(e.stdout, output, objs)
	}
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

// printList prints objects as a v1 List, as kubectl get -o yaml|json does.
func printList(w io.Writer, format string, objs []*unstructured.Unstructured) error {
	items := make([]any, 0, len(objs))
	for _, o := range objs {
		items = append(items, o.Object)
	}
	v := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "List", "items": items, "metadata": map[string]any{"resourceVersion": ""}}}
	return printObjects(w, format, []*unstructured.Unstructured{v})
}

// printJSONPath evaluates a kubectl jsonpath template over one object, or
// over a List of them.
func printJSONPath(w io.Writer, tmpl string, objs []*unstructured.Unstructured, single bool) error {
	// No relaxed form: kubectl prints `-o jsonpath=.spec` as the text
	// ".spec" (its template needs braces), and so does config view.
	tmpl = strings.Trim(tmpl, "'\"")
	var data any
	if single && len(objs) == 1 {
		data = objs[0].Object
	} else {
		items := make([]any, 0, len(objs))
		for _, o := range objs {
			items = append(items, o.Object)
		}
		data = map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
	}
	return executeJSONPath(w, tmpl, data)
}

// executeJSONPath runs a jsonpath template over JSON-shaped data (maps,
// slices, strings, float64s) with kubectl's settings: a missing key prints
// nothing rather than failing.
func executeJSONPath(w io.Writer, tmpl string, data any) error {
	jp := jsonpath.New("out").AllowMissingKeys(true)
	if err := jp.Parse(tmpl); err != nil {
		return fmt.Errorf("error parsing jsonpath %s, %w", tmpl, err) // kubectl's wording
	}
	return jp.Execute(w, data)
}

// getTables prints kubectl's default table, which the API server renders
// (Accept: as=Table), so the columns are exactly kubectl's.
func (e *env) getTables(ctx context.Context, a *apply.Applier, refs []ref, ns, selector string, wide, withKind, ignoreNF bool) error {
	hc, err := a.HTTPClient()
	if err != nil {
		return err
	}
	cfg, err := e.restConfig()
	if err != nil {
		return err
	}
	printed := 0
	var firstErr error
	for _, r := range refs {
		t, err := fetchTable(ctx, hc, cfg.Host, r, ns, selector)
		if err != nil {
			if ignoreNF && apierrors.IsNotFound(err) {
				continue
			}
			if len(refs) == 1 {
				return err
			}
			// kubectl get all keeps going and prints each error.
			fmt.Fprintln(e.stderr, formatError(err))
			if firstErr == nil {
				firstErr = exitError{1}
			}
			continue
		}
		if len(t.Rows) == 0 {
			continue
		}
		if printed > 0 {
			fmt.Fprintln(e.stdout)
		}
		printed++
		printTable(e.stdout, t, r, wide, withKind)
	}
	if printed == 0 && firstErr == nil {
		if ns != "" && refs[0].mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			fmt.Fprintf(e.stderr, "No resources found in %s namespace.\n", ns)
		} else {
			fmt.Fprintln(e.stderr, "No resources found")
		}
	}
	return firstErr
}

func fetchTable(ctx context.Context, hc *http.Client, host string, r ref, ns, selector string) (*metav1.Table, error) {
	path := "/apis/" + r.gvr.Group + "/" + r.gvr.Version
	if r.gvr.Group == "" {
		path = "/api/" + r.gvr.Version
	}
	if ns != "" && r.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		path += "/namespaces/" + url.PathEscape(ns)
	}
	path += "/" + r.gvr.Resource
	if r.name != "" {
		path += "/" + url.PathEscape(r.name)
	}
	q := url.Values{}
	if selector != "" {
		q.Set("labelSelector", selector)
	}
	u := strings.TrimSuffix(host, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
	req.Header.Set("User-Agent", "ferry-kubectl")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var st metav1.Status
		if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
			return nil, &apierrors.StatusError{ErrStatus: st}
		}
		return nil, fmt.Errorf("the server answered %s", resp.Status)
	}
	var t metav1.Table
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("decoding the server's table: %w", err)
	}
	return &t, nil
}

// printTable prints a server-side Table like kubectl: upper-case headers,
// columns of priority 0 (all with wide), names prefixed with the kind when
// several types are printed.
func printTable(w io.Writer, t *metav1.Table, r ref, wide, withKind bool) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	var cols []int
	var head []string
	for i, c := range t.ColumnDefinitions {
		if c.Priority == 0 || wide {
			cols = append(cols, i)
			head = append(head, strings.ToUpper(c.Name))
		}
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	prefix := ""
	if withKind {
		kind := strings.ToLower(r.gvk.Kind)
		if r.gvk.Group != "" {
			kind += "." + r.gvk.Group
		}
		prefix = kind + "/"
	}
	for _, row := range t.Rows {
		var cells []string
		for n, i := range cols {
			if i >= len(row.Cells) {
				cells = append(cells, "")
				continue
			}
			s := cellString(row.Cells[i])
			if n == 0 && t.ColumnDefinitions[i].Name == "Name" {
				s = prefix + s
			}
			cells = append(cells, s)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

func cellString(v any) string {
	switch x := v.(type) {
	case nil:
		return "<none>"
	case string:
		if x == "" {
			return "<none>"
		}
		return x
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprint(int64(x))
		}
		return fmt.Sprint(x)
	default:
		return fmt.Sprint(x)
	}
}

func (e *env) rollout(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "restart" {
		return e.rolloutRestart(ctx, args[1:])
	}
	if len(args) == 0 || args[0] != "status" {
		return errUpstream // history, undo, pause, resume
	}
	fs := e.flags("rollout status")
	var timeout time.Duration
	fs.DurationVar(&timeout, "timeout", 0, "how long to wait (0: 5 minutes)")
	fs.Bool("watch", true, "accepted for compatibility")
	if err := e.parse(fs, args[1:]); err != nil {
		return err
	}
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ns, _, err := e.resolvedNamespace()
	if err != nil {
		return err
	}
	a, err := e.getApplier()
	if err != nil {
		return err
	}
	refs, err := e.resolveRefs(a, fs.Args())
	if err != nil {
		return err
	}
	var objs []*apply.Object
	for _, r := range refs {
		if r.name == "" {
			return errors.New("rollout status needs a name: kubectl rollout status deployment/<name>")
		}
		got, err := fetch(ctx, a, r, ns, "")
		if err != nil {
			return err
		}
		objs = append(objs, &apply.Object{Unstructured: got[0], Source: "command line"})
	}
	if err := a.Wait(ctx, objs, timeout, e.stdout); err != nil {
		return err
	}
	for _, o := range objs {
		fmt.Fprintf(e.stdout, "%s %q successfully rolled out\n", strings.ToLower(o.GetKind()), o.GetName())
	}
	return nil
}
