package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// DryRun is kubectl's --dry-run.
type DryRun int

const (
	// DryRunNone applies for real.
	DryRunNone DryRun = iota
	// DryRunClient sends no write: objects are mapped and looked up (reads
	// only) so the output still says created or configured.
	DryRunClient
	// DryRunServer sends the apply with dryRun=All: the server validates,
	// defaults and runs admission, and persists nothing.
	DryRunServer
)

// Action is the word printed after an object's name.
type Action string

// The words kubectl's client-side apply prints (users know them), and delete's.
const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
	Deleted    Action = "deleted"
	// ServerSideApplied is `kubectl apply --server-side`'s word.
	ServerSideApplied Action = "serverside-applied"
)

// DefaultFieldManager is the server-side apply field manager unless
// overridden: kubectl's own (see takeover.go for why).
const DefaultFieldManager = "kubectl"

// ApplyOptions are one apply's settings (kubectl apply's flags).
type ApplyOptions struct {
	// Namespace is the resolved default namespace: --namespace, else the
	// kubeconfig context's, else "default". NamespaceExplicit is true when
	// it came from --namespace: then an object naming another namespace is
	// refused, as kubectl does.
	Namespace         string
	NamespaceExplicit bool
	// FieldManager defaults to DefaultFieldManager.
	FieldManager string
	// Force takes over fields owned by other managers (--force-conflicts).
	Force  bool
	DryRun DryRun
	// ServerSide is `kubectl apply --server-side`: conflicts with other
	// managers are errors (unless Force), every object's word is
	// "serverside-applied", and client-side apply's managed fields are
	// migrated after the apply, as kubectl does. Without it ferry keeps
	// plain `kubectl apply`'s promises on top of server-side apply: the
	// last-applied-configuration annotation is written, a conflict is
	// settled as client-side apply would (the manifest wins), and the words
	// are created/configured/unchanged.
	ServerSide bool
	// Annotations are added to every object's metadata (see TraceAnnotations).
	Annotations map[string]string
	// Out gets one line per object ("deployment.apps/x created"), ErrOut one
	// line per failed object, both in input order. Nil: not printed.
	Out, ErrOut io.Writer
	// FieldValidation is the server's check of unknown and duplicate
	// fields: "Strict" (default, as kubectl's --validate=true), "Warn" or
	// "Ignore" (--validate=false).
	FieldValidation string
	// CRDTimeout bounds the wait for applied CRDs to be Established (default 1m).
	CRDTimeout time.Duration
	// Guard, when set, is asked about every object that exists, with its
	// live annotations, before anything is sent: every object is looked up
	// first (the metadata GET or LIST the apply does anyway; with
	// ServerSide, which otherwise reads nothing, that lookup is extra). An
	// error refuses the whole apply: its text is the object's line, no
	// object is sent. A non-empty note is printed to ErrOut. Custom
	// resources of a CRD in this apply are checked when their CRD is
	// served (a kind that was not served has no objects to protect).
	// target names the object ("deployment.apps/web in namespace prod").
	Guard func(target string, live map[string]string) (note string, err error)
}

// errNotApplied marks the objects left alone because the guard refused
// another object of the same apply.
var errNotApplied = errors.New("not applied: another object of this apply was refused")

// ItemResult is what happened to one object.
type ItemResult struct {
	Object *Object
	// Action is set when Err is nil.
	Action Action
	// Live is the server's copy after the apply (the dry-run result with
	// DryRunServer); nil with DryRunClient or on error.
	Live *unstructured.Unstructured
	Err  error
	msg  string
}

// Message is the line printed for the item: "<ref> <action>[ (dry run)]" or
// a kubectl-style error ("Error from server (Forbidden): ...").
func (r *ItemResult) Message() string { return r.msg }

// Result is the outcome of Apply or Delete, items in input order.
type Result struct {
	Items  []*ItemResult
	Failed int
}

// Err is nil when every object succeeded; the CLI exits 1 otherwise.
func (r *Result) Err() error {
	if r.Failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d objects failed", r.Failed, len(r.Items))
}

// item carries an object through an apply.
type item struct {
	res     *ItemResult
	mapping *meta.RESTMapping
	stage   int
	// before is the object's resourceVersion before the apply, when known.
	beforeKnown  bool
	beforeExists bool
	beforeRV     string
	beforeMeta   *liveMeta                  // annotations and managed fields, when it exists
	beforeObj    *unstructured.Unstructured // full copy, for server dry run
	// looked: the lookup was done before the stages (Guard).
	looked bool
	// builtin: mapping came from builtinMappings, not discovery.
	builtin bool
	// next is the same object again later in the input: applied after
	// this one, as kubectl applies in order (the last one wins).
	next *item
}

// Apply server-side applies objs: every object is attempted; the returned
// error is only for a failure of the whole run (e.g. canceled context), per
// object failures are in the Result.
func (a *Applier) Apply(ctx context.Context, objs []*Object, o ApplyOptions) (*Result, error) {
	if o.FieldManager == "" {
		o.FieldManager = DefaultFieldManager
	}
	if o.FieldValidation == "" {
		o.FieldValidation = "Strict"
	}
	if o.CRDTimeout == 0 {
		o.CRDTimeout = time.Minute
	}
	suffix := ""
	switch o.DryRun {
	case DryRunClient:
		suffix = " (dry run)"
	case DryRunServer:
		suffix = " (server dry run)"
	}
	p := newPrinter(len(objs), o.Out, o.ErrOut)
	res := &Result{Items: make([]*ItemResult, len(objs))}
	items := make([]*item, len(objs))

	// Kinds defined by CRDs of this apply: not mapped before those exist.
	pending := map[schema.GroupKind]bool{}
	for _, obj := range objs {
		if obj.GroupVersionKind().GroupKind() == crdGK {
			g, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
			k, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "kind")
			pending[schema.GroupKind{Group: g, Kind: k}] = true
		}
	}
	var stages [numStages][]*item
	for i, obj := range objs {
		it := &item{res: &ItemResult{Object: obj}}
		items[i], res.Items[i] = it, it.res
		gvk := obj.GroupVersionKind()
		if !pending[gvk.GroupKind()] {
			if err := a.mapItem(it, o); err != nil {
				it.res.Err = err
				it.res.msg = errorMessage(obj, "applying", err)
				p.done(i, it.res)
				continue
			}
		}
		it.stage = stageOf(gvk.GroupKind(), it.mapping)
		stages[it.stage] = append(stages[it.stage], it)
	}
	idx := map[*item]int{}
	for i, it := range items {
		idx[it] = i
	}
	if o.Guard != nil {
		var all []*item
		for _, st := range stages {
			for _, it := range st {
				if it.mapping != nil {
					all = append(all, it)
				}
			}
		}
		if !a.guardAll(ctx, all, o) {
			for i, it := range items {
				if it.res.Err == nil {
					it.res.Err = errNotApplied
				}
				p.done(i, it.res)
				res.Failed++
			}
			return res, ctx.Err()
		}
	}
	for s := 0; s < numStages; s++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		var todo []*item
		for _, it := range stages[s] {
			if it.mapping == nil { // a custom resource of a CRD applied just now
				if err := a.mapAfterCRDs(ctx, it, o); err != nil {
					it.res.Err = err
					it.res.msg = errorMessage(it.res.Object, "applying", err)
					p.done(idx[it], it.res)
					continue
				}
				if o.Guard != nil && !a.guardAll(ctx, []*item{it}, o) {
					p.done(idx[it], it.res)
					continue
				}
			}
			todo = append(todo, it)
		}
		if !o.ServerSide {
			var look []*item
			for _, it := range todo {
				if !it.looked {
					look = append(look, it)
				}
			}
			a.lookupBefore(ctx, look, o.DryRun == DryRunServer)
		}
		waitCRDs := s == stagePrereq && len(pending) > 0 && o.DryRun == DryRunNone
		a.each(ctx, chains(todo), func(it *item) {
			for ; it != nil; it = it.next {
				a.applyOne(ctx, it, o, suffix)
				if !waitCRDs || it.res.Object.GroupVersionKind().GroupKind() != crdGK {
					p.done(idx[it], it.res)
				}
				if it.next != nil && o.DryRun == DryRunNone && it.res.Live != nil {
					// The next copy starts from what this one left.
					n := it.next
					n.beforeKnown, n.beforeExists = true, true
					n.beforeRV, n.beforeMeta = it.res.Live.GetResourceVersion(), metaOf(it.res.Live)
				}
			}
		})
		if waitCRDs {
			// CRDs are printed once Established (or failed to be).
			a.waitCRDs(ctx, todo, o.CRDTimeout)
			for _, it := range todo {
				if it.res.Object.GroupVersionKind().GroupKind() == crdGK {
					p.done(idx[it], it.res)
				}
			}
			a.mapper.Reset()
		}
	}
	for _, it := range res.Items {
		if it.Err != nil {
			res.Failed++
		}
	}
	return res, ctx.Err()
}

// mapItem finds the object's resource and settles its namespace.
func (a *Applier) mapItem(it *item, o ApplyOptions) error {
	obj := it.res.Object
	gvk := obj.GroupVersionKind()
	m, ok := builtinMappings[gvk]
	it.builtin = ok
	if !ok {
		var err error
		if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return err
		}
	}
	it.mapping = m
	return setNamespace(obj, m, o.Namespace, o.NamespaceExplicit)
}

// mapAfterCRDs maps a custom resource whose CRD this apply installed:
// discovery can lag Established by a moment, so retry with a fresh mapper.
func (a *Applier) mapAfterCRDs(ctx context.Context, it *item, o ApplyOptions) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := a.mapItem(it, o)
		if err == nil || !meta.IsNoMatchError(err) || time.Now().After(deadline) || o.DryRun != DryRunNone {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		a.mapper.Reset()
	}
}

// namespaceMismatchError is kubectl's refusal of an object in another
// namespace than an explicit --namespace.
type namespaceMismatchError struct{ obj, flag string }

func (e *namespaceMismatchError) Error() string {
	return fmt.Sprintf("the namespace from the provided object %q does not match the namespace %q. You must pass '--namespace=%s' to perform this operation.", e.obj, e.flag, e.obj)
}

// setNamespace defaults the namespace of namespaced objects and clears it
// on cluster-scoped ones (the API server would reject it otherwise).
func setNamespace(obj *Object, m *meta.RESTMapping, ns string, explicit bool) error {
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		obj.SetNamespace("")
		return nil
	}
	cur := obj.GetNamespace()
	switch {
	case cur == "":
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		obj.SetNamespace(ns)
	case explicit && cur != ns:
		return &namespaceMismatchError{obj: cur, flag: ns}
	}
	return nil
}

// chains links the copies of one object (same resource, namespace and
// name) in input order and returns the first of each: the copies of an
// object are applied one after the other, never at the same time.
func chains(items []*item) []*item {
	type key struct {
		gvr      schema.GroupVersionResource
		ns, name string
	}
	last := map[key]*item{}
	var heads []*item
	for _, it := range items {
		it.next = nil
		k := key{it.mapping.Resource, it.res.Object.GetNamespace(), it.res.Object.GetName()}
		if prev, ok := last[k]; ok {
			prev.next = it
		} else {
			heads = append(heads, it)
		}
		last[k] = it
	}
	return heads
}

// each runs f on every item with the applier's concurrency.
func (a *Applier) each(ctx context.Context, items []*item, f func(*item)) {
	if len(items) == 0 {
		return
	}
	ch := make(chan *item)
	var wg sync.WaitGroup
	n := min(a.opts.Concurrency, len(items))
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				f(it)
			}
		}()
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
}

// listThreshold: with this many objects of one resource in one namespace,
// one metadata LIST is cheaper than a GET each.
const listThreshold = 4

// lookupBefore records whether each object exists and its resourceVersion,
// which is how "unchanged" is told from "configured": a no-op server-side
// apply keeps the resourceVersion. Objects of a resource and namespace with
// many objects share one metadata-only LIST; the rest get a metadata GET.
// For a server dry run the full object is read (a dry run does not bump the
// resourceVersion, so the objects are compared instead). A failed lookup
// (e.g. RBAC allows patch but not get) is not an error: the word is then
// "configured".
func (a *Applier) lookupBefore(ctx context.Context, items []*item, full bool) {
	type key struct {
		gvr schema.GroupVersionResource
		ns  string
	}
	groups := map[key][]*item{}
	for _, it := range items {
		k := key{it.mapping.Resource, it.res.Object.GetNamespace()}
		groups[k] = append(groups[k], it)
	}
	var singles []*item
	var lists []key
	for k, g := range groups {
		if full || len(g) < listThreshold {
			singles = append(singles, g...)
		} else {
			lists = append(lists, k)
		}
	}
	var wg sync.WaitGroup
	for _, k := range lists {
		wg.Add(1)
		go func() {
			defer wg.Done()
			metas := map[string]*liveMeta{}
			opts := metav1.ListOptions{Limit: 500}
			for {
				l, err := a.meta.Resource(k.gvr).Namespace(k.ns).List(ctx, opts)
				if err != nil {
					return // unknown: the items stay !beforeKnown
				}
				for i := range l.Items {
					metas[l.Items[i].Name] = metaOf(&l.Items[i])
				}
				if l.Continue == "" {
					break
				}
				opts.Continue = l.Continue
			}
			for _, it := range groups[k] {
				it.beforeKnown = true
				if m, ok := metas[it.res.Object.GetName()]; ok {
					it.beforeExists, it.beforeRV, it.beforeMeta = true, m.ResourceVersion, m
				}
			}
		}()
	}
	a.each(ctx, singles, func(it *item) {
		name, ns := it.res.Object.GetName(), it.res.Object.GetNamespace()
		var err error
		if full {
			var u *unstructured.Unstructured
			u, err = a.dyn.Resource(it.mapping.Resource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil {
				it.beforeObj, it.beforeRV, it.beforeMeta = u, u.GetResourceVersion(), metaOf(u)
			}
		} else {
			var m *metav1.PartialObjectMetadata
			m, err = a.meta.Resource(it.mapping.Resource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil {
				it.beforeRV, it.beforeMeta = m.ResourceVersion, metaOf(m)
			}
		}
		switch {
		case err == nil:
			it.beforeKnown, it.beforeExists = true, true
		case apierrors.IsNotFound(err):
			it.beforeKnown = true
		}
	})
	wg.Wait()
}

// guardAll looks every item up (once: the stages reuse it) and asks
// o.Guard about each that exists; refused items get the refusal as their
// error and line. It reports whether none was refused.
func (a *Applier) guardAll(ctx context.Context, items []*item, o ApplyOptions) bool {
	a.lookupBefore(ctx, items, o.DryRun == DryRunServer)
	ok := true
	for _, it := range items {
		it.looked = true
		if !it.beforeExists || it.beforeMeta == nil {
			continue // new (or unreadable: the apply's own answer tells)
		}
		obj := it.res.Object
		target := obj.Ref()
		if ns := obj.GetNamespace(); ns != "" {
			target += " in namespace " + ns
		}
		note, err := o.Guard(target, it.beforeMeta.Annotations)
		if err != nil {
			it.res.Err, it.res.msg = err, err.Error()
			ok = false
			continue
		}
		if note != "" {
			warn(o.ErrOut, "%s", note)
		}
	}
	return ok
}

// applyOne sends the server-side apply of one object and settles its word.
func (a *Applier) applyOne(ctx context.Context, it *item, o ApplyOptions, suffix string) {
	obj := it.res.Object
	r := it.res
	defer func() {
		if r.Err != nil {
			r.msg = errorMessage(obj, "applying", r.Err)
		} else {
			r.msg = obj.Ref() + " " + string(r.Action) + suffix
		}
	}()
	if o.DryRun == DryRunClient {
		r.Action = Created
		switch {
		case o.ServerSide:
			r.Action = ServerSideApplied
		case it.beforeExists || !it.beforeKnown:
			r.Action = Configured
		}
		return
	}
	body := obj.Unstructured.DeepCopy()
	var dropped *fieldpath.Set // server dry run: what the apply would delete
	if len(o.Annotations) > 0 {
		ann := body.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		for k, v := range o.Annotations {
			ann[k] = v
		}
		body.SetAnnotations(ann)
	}
	if !o.ServerSide {
		// Plain apply writes client-side apply's annotation, as kubectl does.
		v, err := lastAppliedValue(body)
		if err != nil {
			r.Err = err
			return
		}
		ann := body.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[LastAppliedAnnotation] = v
		body.SetAnnotations(ann)
		if it.beforeMeta != nil && o.DryRun == DryRunNone {
			// Take client-side apply's fields over first, and the
			// fields the manifest drops from whoever manages them, so
			// they go with this apply (client-side apply's three-way
			// patch deletes them). One JSON patch, only when needed.
			rv, migrated, err := a.migrate(ctx, it, it.beforeMeta, o, body)
			switch {
			case err != nil:
				warn(o.ErrOut, "Warning: failed to take over managed fields of %s (fields dropped from the manifest may stay; retried next apply): %v", obj.Ref(), err)
			case migrated:
				it.beforeRV = rv
			}
		}
		if it.beforeMeta != nil && o.DryRun == DryRunServer {
			// A dry run cannot rewrite managedFields before its apply:
			// note what the real apply would delete, and delete it
			// from the dry-run result below.
			_, dropped, _, _ = takeOverDropped(it.beforeMeta.ManagedFields, it.beforeMeta.Annotations[LastAppliedAnnotation], body, o.FieldManager)
		}
		if it.beforeMeta != nil && it.beforeMeta.Annotations[LastAppliedAnnotation] == "" {
			warn(o.ErrOut, "Warning: resource %s/%s is missing the %s annotation which is required by kubectl apply. kubectl apply should only be used on resources created declaratively by either kubectl create --save-config or kubectl apply. The missing annotation will be patched automatically.",
				it.mapping.Resource.Resource, obj.GetName(), LastAppliedAnnotation)
		}
	}
	live, code, err := a.patch(ctx, it, body, o, o.Force)
	if it.builtin && isPathNotFound(err) {
		// An API server without this built-in version: ask discovery.
		it.builtin = false
		if m, merr := a.mapper.RESTMapping(obj.GroupVersionKind().GroupKind(), obj.GroupVersionKind().Version); merr != nil {
			err = merr
		} else if *m != *it.mapping {
			it.mapping = m
			live, code, err = a.patch(ctx, it, body, o, o.Force)
		}
	}
	if err != nil && (o.FieldValidation == "Ignore" || o.FieldValidation == "Warn") {
		// Server-side apply refuses a field the schema does not declare
		// whatever fieldValidation says; kubectl's --validate=false|warn
		// sends it and the server drops it. Drop it here, then apply.
		if paths := dropUnknownFields(body.Object, err); len(paths) > 0 {
			if o.FieldValidation == "Warn" {
				for _, p := range paths {
					warn(o.ErrOut, "Warning: unknown field %q", strings.TrimPrefix(p, "."))
				}
			}
			live, code, err = a.patch(ctx, it, body, o, o.Force)
		}
	}
	if !o.ServerSide && !o.Force && apierrors.IsConflict(err) {
		// Client-side apply never conflicts: its three-way patch sets
		// every manifest field that differs from the live object, taken
		// over by kubectl scale, edit, patch or not (the differential
		// suite's scale/patch/edit-then-apply cases). So does force.
		live, code, err = a.patch(ctx, it, body, o, true)
	}
	if err != nil {
		r.Err = err
		return
	}
	if o.ServerSide && o.DryRun == DryRunNone {
		// kubectl's order: apply, then migrate (3 requests only when
		// there is something to migrate), then apply again so fields
		// dropped from the manifest go.
		if err := a.saveLastApplied(ctx, it, live, o); err != nil {
			warn(o.ErrOut, "Warning: failed to migrate kubectl.kubernetes.io/last-applied-configuration for Server-Side Apply. This is non-fatal and will be retried next time you apply. Error: %v", err)
		} else if _, migrated, err := a.migrate(ctx, it, metaOf(live), o, nil); err != nil {
			warn(o.ErrOut, "Warning: failed to migrate managed fields of %s from client-side apply (retried next apply): %v", obj.Ref(), err)
		} else if migrated {
			if again, _, err := a.patch(ctx, it, body, o, o.Force); err != nil {
				warn(o.ErrOut, "Warning: failed to re-apply %s after migrating its managed fields: %v", obj.Ref(), err)
			} else {
				live = again
			}
		}
	}
	if dropped != nil && !dropped.Empty() {
		live = a.dryRunDrop(ctx, it, live, dropped, o)
	}
	r.Live = live
	// The API server answers 201 when the apply created the object.
	switch {
	case o.ServerSide:
		r.Action = ServerSideApplied
	case code == http.StatusCreated:
		r.Action = Created
	case o.DryRun == DryRunServer && it.beforeObj != nil:
		r.Action = Configured
		if equalIgnoringManagedFields(it.beforeObj, live) {
			r.Action = Unchanged
		}
	case it.beforeKnown && it.beforeExists && it.beforeRV == live.GetResourceVersion():
		r.Action = Unchanged
	default:
		r.Action = Configured
	}
}

// dryRunDrop is the server dry run's stand-in for taking over the fields
// the manifest drops: they are deleted from the dry-run result, which is
// then sent as a dry-run update so that the API server defaults and
// validates it as it would the real apply's result (a dropped replicas
// comes back as 1). Only objects that have such fields pay that request.
func (a *Applier) dryRunDrop(ctx context.Context, it *item, live *unstructured.Unstructured, dropped *fieldpath.Set, o ApplyOptions) *unstructured.Unstructured {
	u := live.DeepCopy()
	removePaths(u.Object, dropped)
	u.SetManagedFields(nil) // nil: the update keeps the stored ones
	res, err := a.dyn.Resource(it.mapping.Resource).Namespace(u.GetNamespace()).Update(ctx, u,
		metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: o.FieldManager})
	if err != nil {
		warn(o.ErrOut, "Warning: %s: the dry run shows the fields dropped from the manifest removed, without the server's defaults: %v", it.res.Object.Ref(), err)
		return u
	}
	return res
}

// isPathNotFound is a 404 that is not about an object (an apply creates
// objects) or a missing namespace: the API path itself is not served.
func isPathNotFound(err error) bool {
	var st apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &st) {
		return false
	}
	d := st.Status().Details
	return d == nil || d.Kind == "" || (d.Kind != "namespaces" && d.Name == "")
}

// patch sends one server-side apply of body and returns the server's
// object and HTTP status.
func (a *Applier) patch(ctx context.Context, it *item, body *unstructured.Unstructured, o ApplyOptions, force bool) (*unstructured.Unstructured, int, error) {
	data, err := json.Marshal(body.Object)
	if err != nil {
		return nil, 0, fmt.Errorf("encoding: %w", err)
	}
	req := a.rest.Patch(types.ApplyPatchType).
		AbsPath(resourcePath(it.mapping, body.GetNamespace(), body.GetName())).
		Param("fieldManager", o.FieldManager).
		Body(data)
	if o.FieldValidation != "" {
		req.Param("fieldValidation", o.FieldValidation)
	}
	if force {
		req.Param("force", "true")
	}
	if o.DryRun == DryRunServer {
		req.Param("dryRun", metav1.DryRunAll)
	}
	var code int
	raw, err := req.Do(ctx).StatusCode(&code).Raw()
	if err != nil {
		return nil, code, statusFromBody(err, raw)
	}
	live := &unstructured.Unstructured{}
	if err := live.UnmarshalJSON(raw); err != nil {
		return nil, code, fmt.Errorf("decoding the server's answer: %w", err)
	}
	return live, code, nil
}

// warnMu keeps warnings from concurrent applies on lines of their own.
var warnMu sync.Mutex

func warn(w io.Writer, format string, args ...any) {
	if w == nil {
		return
	}
	warnMu.Lock()
	defer warnMu.Unlock()
	fmt.Fprintf(w, format+"\n", args...)
}

func equalIgnoringManagedFields(a, b *unstructured.Unstructured) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	a.SetManagedFields(nil)
	b.SetManagedFields(nil)
	return equality.Semantic.DeepEqual(a.Object, b.Object)
}

// resourcePath is the REST path of one object.
func resourcePath(m *meta.RESTMapping, ns, name string) string {
	gv := m.Resource.GroupVersion()
	p := "/apis/" + gv.Group + "/" + gv.Version
	if gv.Group == "" {
		p = "/api/" + gv.Version
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		p += "/namespaces/" + url.PathEscape(ns)
	}
	return p + "/" + m.Resource.Resource + "/" + url.PathEscape(name)
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// waitCRDs waits until every CRD applied without error is Established, so
// that its custom resources can be applied next. A CRD that does not
// become Established in time is marked failed.
func (a *Applier) waitCRDs(ctx context.Context, items []*item, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	a.each(ctx, items, func(it *item) {
		if it.res.Err != nil || it.res.Object.GroupVersionKind().GroupKind() != crdGK {
			return
		}
		name := it.res.Object.GetName()
		for {
			u, err := a.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err == nil && crdEstablished(u) {
				return
			}
			select {
			case <-ctx.Done():
				it.res.Err = fmt.Errorf("customresourcedefinition %q is not Established after %s", name, timeout)
				it.res.msg = errorMessage(it.res.Object, "applying", it.res.Err)
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

func crdEstablished(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// printer prints results in input order as soon as every earlier object is done.
type printer struct {
	mu          sync.Mutex
	res         []*ItemResult
	next        int
	out, errOut io.Writer
}

func newPrinter(n int, out, errOut io.Writer) *printer {
	return &printer{res: make([]*ItemResult, n), out: out, errOut: errOut}
}

func (p *printer) done(i int, r *ItemResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res[i] = r
	for p.next < len(p.res) && p.res[p.next] != nil {
		r := p.res[p.next]
		w := p.out
		if r.Err != nil {
			w = p.errOut
		}
		if w != nil && r.msg != "" {
			fmt.Fprintln(w, r.msg)
		}
		p.next++
	}
}

// statusFromBody turns an error answer into the API server's Status (the
// untyped REST client leaves it undecoded: "unknown"), so messages carry
// the server's words and a conflict's causes.
func statusFromBody(err error, body []byte) error {
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" && st.Message != "" {
		return &apierrors.StatusError{ErrStatus: st}
	}
	return err
}
