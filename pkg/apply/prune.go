package apply

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
)

// kubectl apply --prune, both kinds kubectl has:
//
//   - ApplySets (KEP-3659, --prune --applyset=[secrets|configmaps/]NAME):
//     a parent object records which kinds and namespaces the set spans,
//     every member carries the label applyset.kubernetes.io/part-of=<id>;
//     members of the set that the current apply does not contain are
//     deleted. ferry writes exactly kubectl's labels, annotations, field
//     managers and tooling name ("kubectl"), so the real kubectl and ferry
//     can take turns on the same set.
//   - Label-selector prune (--prune -l key=value): objects of kubectl's
//     default kinds matching the selector, in the namespaces applied to,
//     that carry the last-applied-configuration annotation (made by apply)
//     and were not applied now.

// The ApplySet labels and annotations (kubectl's names).
const (
	applySetToolingAnnotation = "applyset.kubernetes.io/tooling"
	applySetGKsAnnotation     = "applyset.kubernetes.io/contains-group-kinds"
	applySetNSAnnotation      = "applyset.kubernetes.io/additional-namespaces"
	applySetIDLabel           = "applyset.kubernetes.io/id"
	applySetPartOfLabel       = "applyset.kubernetes.io/part-of"
	// applySetTooling: kubectl refuses a set whose tooling name (before
	// the last "/") is not its own, so ferry writes kubectl's name; the
	// version part says it was ferry.
	applySetTooling = "kubectl/ferry"
	applySetManager = "kubectl-applyset"
)

// Pruned is the word for a deleted member.
const Pruned Action = "pruned"

// ApplySet is one --applyset parent and what this apply puts in it.
type ApplySet struct {
	a         *Applier
	mapping   *meta.RESTMapping
	name, ns  string
	id        string
	curGKs    sets.Set[schema.GroupKind]
	curNS     sets.Set[string]
	newGKs    sets.Set[schema.GroupKind]
	newNS     sets.Set[string]
	applied   sets.Set[string] // gk/ns/name of this apply's objects
	mappingOf map[schema.GroupKind]*meta.RESTMapping
}

// OpenApplySet parses kubectl's --applyset value: "NAME" (a Secret),
// "secrets/NAME" or "configmaps/NAME", in namespace ns (required, as
// kubectl: the parent is namespaced).
func (a *Applier) OpenApplySet(ref, ns string) (*ApplySet, error) {
	res, name, ok := strings.Cut(ref, "/")
	if !ok {
		res, name = "secrets", ref
	}
	if name == "" {
		return nil, fmt.Errorf("invalid parent reference %q: name cannot be blank", ref)
	}
	var gvk schema.GroupVersionKind
	switch res {
	case "secrets", "secret":
		gvk = schema.GroupVersionKind{Version: "v1", Kind: "Secret"}
	case "configmaps", "configmap", "cm":
		gvk = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	default:
		return nil, fmt.Errorf("invalid parent reference %q: ferry supports Secret and ConfigMap ApplySet parents", ref)
	}
	if ns == "" {
		return nil, fmt.Errorf("namespace is required to use namespace-scoped ApplySet")
	}
	h := sha256.Sum256([]byte(strings.Join([]string{name, ns, gvk.Kind, gvk.Group}, ".")))
	return &ApplySet{a: a, mapping: builtinMappings[gvk], name: name, ns: ns,
		id:     "applyset-" + base64.RawURLEncoding.EncodeToString(h[:]) + "-v1",
		curGKs: sets.New[schema.GroupKind](), curNS: sets.New(ns), newGKs: sets.New[schema.GroupKind](), newNS: sets.New(ns),
		applied: sets.New[string](), mappingOf: map[schema.GroupKind]*meta.RESTMapping{}}, nil
}

// ID is the set's id (the value of the members' part-of label).
func (s *ApplySet) ID() string { return s.id }

// Begin labels objs as members, reads the parent (refusing one made by
// other tooling or for another set), and records the union of the old
// and new kinds and namespaces on it before anything is applied, as
// kubectl does: if the apply fails half way, the next prune still sees
// every member.
func (s *ApplySet) Begin(ctx context.Context, objs []*Object, o ApplyOptions) error {
	for _, obj := range objs {
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		if _, ok := labels[applySetPartOfLabel]; ok {
			return fmt.Errorf("ApplySet label %q already set in input data", applySetPartOfLabel)
		}
		labels[applySetPartOfLabel] = s.id
		obj.SetLabels(labels)
		gvk := obj.GroupVersionKind()
		m, ok := builtinMappings[gvk]
		if !ok {
			var err error
			if m, err = s.a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				continue // reported by the apply itself
			}
		}
		s.mappingOf[gvk.GroupKind()] = m
		s.newGKs.Insert(gvk.GroupKind())
		ns := ""
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if ns = obj.GetNamespace(); ns == "" {
				ns = o.Namespace
			}
			s.newNS.Insert(ns)
		}
		s.applied.Insert(memberKey(gvk.GroupKind(), ns, obj.GetName()))
	}
	parent, err := s.a.meta.Resource(s.mapping.Resource).Namespace(s.ns).Get(ctx, s.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("failed to fetch ApplySet parent object %q: %w", s.ref(), err)
	default:
		ann := parent.GetAnnotations()
		tool, ok := ann[applySetToolingAnnotation]
		if !ok {
			return fmt.Errorf("ApplySet parent object %q already exists and is missing required annotation %q", s.ref(), applySetToolingAnnotation)
		}
		if i := strings.LastIndex(tool, "/"); i >= 0 {
			tool = tool[:i]
		}
		if tool != "kubectl" {
			return fmt.Errorf("ApplySet parent object %q already exists and is managed by tooling %q instead of %q", s.ref(), tool, "kubectl")
		}
		if id := parent.GetLabels()[applySetIDLabel]; id != s.id {
			return fmt.Errorf("ApplySet parent object %q exists and has incorrect value for label %q (got: %s, want: %s)", s.ref(), applySetIDLabel, id, s.id)
		}
		gks, ok := ann[applySetGKsAnnotation]
		if !ok {
			return fmt.Errorf("kubectl requires the %q annotation to be set on all ApplySet parent objects", applySetGKsAnnotation)
		}
		for _, g := range strings.Split(gks, ",") {
			if g != "" {
				s.curGKs.Insert(schema.ParseGroupKind(g))
			}
		}
		for _, n := range strings.Split(ann[applySetNSAnnotation], ",") {
			if n != "" {
				s.curNS.Insert(n)
			}
		}
	}
	return s.updateParent(ctx, s.curGKs.Union(s.newGKs), s.curNS.Union(s.newNS), o)
}

func (s *ApplySet) ref() string { return s.mapping.Resource.Resource + "/" + s.name }

func memberKey(gk schema.GroupKind, ns, name string) string {
	return gk.String() + "/" + ns + "/" + name
}

// updateParent server-side applies the parent's labels and annotations
// (field manager kubectl-applyset, forced on conflict as kubectl does).
func (s *ApplySet) updateParent(ctx context.Context, gks sets.Set[schema.GroupKind], nss sets.Set[string], o ApplyOptions) error {
	if o.DryRun == DryRunClient {
		return nil
	}
	var kinds []string
	for gk := range gks {
		kinds = append(kinds, gk.String())
	}
	sort.Strings(kinds)
	others := sets.List(nss.Clone().Delete(s.ns))
	body, err := json.Marshal(map[string]any{
		"apiVersion": s.mapping.GroupVersionKind.GroupVersion().String(), "kind": s.mapping.GroupVersionKind.Kind,
		"metadata": map[string]any{"name": s.name, "namespace": s.ns,
			"labels": map[string]string{applySetIDLabel: s.id},
			"annotations": map[string]string{applySetToolingAnnotation: applySetTooling,
				applySetGKsAnnotation: strings.Join(kinds, ","), applySetNSAnnotation: strings.Join(others, ",")}},
	})
	if err != nil {
		return err
	}
	send := func(force bool) error {
		req := s.a.rest.Patch(types.ApplyPatchType).AbsPath(resourcePath(s.mapping, s.ns, s.name)).
			Param("fieldManager", applySetManager).Body(body)
		if force {
			req.Param("force", "true")
		}
		if o.DryRun == DryRunServer {
			req.Param("dryRun", metav1.DryRunAll)
		}
		raw, err := req.Do(ctx).Raw()
		return statusFromBody(err, raw)
	}
	err = send(false)
	if apierrors.IsConflict(err) {
		err = send(true)
	}
	if err != nil {
		return fmt.Errorf("failed to update ApplySet: %w", err)
	}
	return nil
}

// Prune deletes the members this apply did not contain (in every kind and
// namespace the parent recorded), prints "<kind>/<name> pruned" for each,
// then records the current kinds and namespaces on the parent. Call it
// only when every object applied: kubectl keeps the superset otherwise.
func (s *ApplySet) Prune(ctx context.Context, o ApplyOptions) error {
	selector := applySetPartOfLabel + "=" + s.id
	var targets []pruneTarget
	for gk := range s.curGKs.Union(s.newGKs) {
		m, ok := s.mappingOf[gk]
		if !ok {
			var err error
			if m, err = s.a.mapper.RESTMapping(gk); err != nil {
				return fmt.Errorf("could not find mapping for kind in %q annotation: %w", applySetGKsAnnotation, err)
			}
		}
		if m.Scope.Name() != meta.RESTScopeNameNamespace {
			targets = append(targets, pruneTarget{m, ""})
			continue
		}
		for ns := range s.curNS.Union(s.newNS) {
			targets = append(targets, pruneTarget{m, ns})
		}
	}
	keep := func(gk schema.GroupKind, ns, name string, _ map[string]string) bool {
		return s.applied.Has(memberKey(gk, ns, name))
	}
	if err := s.a.prune(ctx, targets, selector, keep, o); err != nil {
		return err
	}
	return s.updateParent(ctx, s.newGKs, s.newNS, o)
}

type pruneTarget struct {
	m  *meta.RESTMapping
	ns string
}

// prune lists each target by selector (metadata only) and deletes what
// keep refuses, in a stable order (kind, namespace, name).
func (a *Applier) prune(ctx context.Context, targets []pruneTarget, selector string, keep func(gk schema.GroupKind, ns, name string, ann map[string]string) bool, o ApplyOptions) error {
	sort.Slice(targets, func(i, j int) bool {
		ki, kj := targets[i].m.GroupVersionKind.GroupKind().String(), targets[j].m.GroupVersionKind.GroupKind().String()
		if ki != kj {
			return ki < kj
		}
		return targets[i].ns < targets[j].ns
	})
	suffix := ""
	switch o.DryRun {
	case DryRunClient:
		suffix = " (dry run)"
	case DryRunServer:
		suffix = " (server dry run)"
	}
	for _, t := range targets {
		gk := t.m.GroupVersionKind.GroupKind()
		l, err := a.meta.Resource(t.m.Resource).Namespace(t.ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return fmt.Errorf("listing %s to prune: %w", t.m.Resource.Resource, err)
		}
		sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
		for _, it := range l.Items {
			if keep(gk, t.ns, it.Name, it.Annotations) {
				continue
			}
			if o.DryRun != DryRunClient {
				bg := metav1.DeletePropagationBackground
				opts := metav1.DeleteOptions{PropagationPolicy: &bg}
				if o.DryRun == DryRunServer {
					opts.DryRun = []string{metav1.DryRunAll}
				}
				err := a.meta.Resource(t.m.Resource).Namespace(t.ns).Delete(ctx, it.Name, opts)
				if err != nil && !apierrors.IsNotFound(err) {
					return fmt.Errorf("pruning %s/%s: %w", strings.ToLower(gk.String()), it.Name, err)
				}
			}
			if o.Out != nil {
				fmt.Fprintf(o.Out, "%s/%s %s%s\n", strings.ToLower(gk.String()), it.Name, Pruned, suffix)
			}
		}
	}
	return nil
}

// legacyPruneKinds are kubectl's default kinds for label-selector prune.
var legacyPruneKinds = []schema.GroupVersionKind{
	{Version: "v1", Kind: "ConfigMap"}, {Version: "v1", Kind: "Endpoints"}, {Version: "v1", Kind: "PersistentVolumeClaim"},
	{Version: "v1", Kind: "Pod"}, {Version: "v1", Kind: "ReplicationController"}, {Version: "v1", Kind: "Secret"},
	{Version: "v1", Kind: "Service"}, {Group: "batch", Version: "v1", Kind: "Job"}, {Group: "batch", Version: "v1", Kind: "CronJob"},
	{Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"}, {Group: "apps", Version: "v1", Kind: "DaemonSet"},
	{Group: "apps", Version: "v1", Kind: "Deployment"}, {Group: "apps", Version: "v1", Kind: "ReplicaSet"},
	{Group: "apps", Version: "v1", Kind: "StatefulSet"},
	{Version: "v1", Kind: "Namespace"}, {Version: "v1", Kind: "PersistentVolume"},
}

// PruneSelector is kubectl's label-selector prune after an apply whose
// result is res: objects of legacyPruneKinds matching selector, in the
// namespaces res applied to (cluster-scoped kinds everywhere), carrying
// the last-applied-configuration annotation, not among res's objects.
func (a *Applier) PruneSelector(ctx context.Context, res *Result, selector string, o ApplyOptions) error {
	applied := sets.New[string]()
	nss := sets.New[string]()
	for _, it := range res.Items {
		obj := it.Object
		applied.Insert(memberKey(obj.GroupVersionKind().GroupKind(), obj.GetNamespace(), obj.GetName()))
		if obj.GetNamespace() != "" {
			nss.Insert(obj.GetNamespace())
		}
	}
	var targets []pruneTarget
	for _, gvk := range legacyPruneKinds {
		m, ok := builtinMappings[gvk]
		if !ok {
			var err error
			if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				return fmt.Errorf("error retrieving RESTMappings to prune: %w", err)
			}
		}
		if m.Scope.Name() != meta.RESTScopeNameNamespace {
			targets = append(targets, pruneTarget{m, ""})
			continue
		}
		for ns := range nss {
			targets = append(targets, pruneTarget{m, ns})
		}
	}
	keep := func(gk schema.GroupKind, ns, name string, ann map[string]string) bool {
		_, byApply := ann[LastAppliedAnnotation]
		return !byApply || applied.Has(memberKey(gk, ns, name))
	}
	return a.prune(ctx, targets, selector, keep, o)
}
