package apply

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

// Fields the manifest drops, whoever manages them now.
//
// Client-side `kubectl apply` sends a three-way patch that deletes every
// field present in the last-applied-configuration annotation and absent
// from the new manifest, with everything below it, whichever manager set
// it last (`kubectl label --overwrite`, `set image`, `scale`, `patch`,
// `edit`, a controller). Server-side apply removes a field only when the
// applier owned it and no other manager does. So before a plain apply,
// ferry moves the ownership of exactly those fields from the other
// managers to its own Apply entry (a JSON patch of managedFields, guarded
// by the resourceVersion, sent together with the csaupgrade migration);
// the apply that follows no longer carries them and the API server
// removes them. This is the shape of fluxcd/pkg/ssa's field manager
// cleanup (a managedFields rewrite before the apply), narrowed to the
// fields the manifest dropped: every other field keeps its owners.
//
// The paths come from managedFields, i.e. from the API server's own
// schema (list items by their keys, k:{"name":"app"}; set members by
// value), so no OpenAPI document is needed, custom resources included.
// A field the annotation does not list (an annotation added by
// `kubectl annotate`) is never taken: kubectl keeps it too.

// nativeGroups are the API groups the API server serves from built-in
// types, which take strategic merge patches: kubectl's scheme (a test
// keeps the list in step with it) and the two groups served by the API
// server's own extension servers. Any other group is served by a CRD:
// kubectl's client-side apply sends its objects a JSON merge patch.
var nativeGroups = map[string]bool{
	"": true, "admissionregistration.k8s.io": true, "apps": true, "authentication.k8s.io": true,
	"authorization.k8s.io": true, "autoscaling": true, "batch": true, "certificates.k8s.io": true,
	"coordination.k8s.io": true, "discovery.k8s.io": true, "events.k8s.io": true, "extensions": true,
	"flowcontrol.apiserver.k8s.io": true, "internal.apiserver.k8s.io": true, "lifecycle.k8s.io": true,
	"meta.k8s.io": true, "networking.k8s.io": true, "node.k8s.io": true, "policy": true,
	"rbac.authorization.k8s.io": true, "resource.k8s.io": true, "scheduling.k8s.io": true,
	"storage.k8s.io": true, "storagemigration.k8s.io": true,
	"apiextensions.k8s.io": true, "apiregistration.k8s.io": true,
}

// droppedFields returns the members of owned (one manager's fields) that
// client-side apply's three-way patch would delete: those with a prefix
// present in lastApplied and absent from manifest. With replaceLists (a
// custom resource: kubectl sends a JSON merge patch, which replaces a
// list whole whenever the live one differs) also those inside a list the
// manifest has, absent from the manifest's list: another manager's item,
// or its field in an item the manifest keeps. prefixes holds those
// prefixes, each the shortest one of its member (what the patch deletes,
// all of it). Paths under .status are left alone (a main-resource apply
// cannot change them) and so are paths by list index (an atomic list is
// replaced whole by the apply anyway).
func droppedFields(lastApplied, manifest map[string]any, owned *fieldpath.Set, replaceLists bool) (take, prefixes *fieldpath.Set) {
	take, prefixes = fieldpath.NewSet(), fieldpath.NewSet()
	owned.Iterate(func(p fieldpath.Path) {
		if len(p) == 0 || (p[0].FieldName != nil && *p[0].FieldName == "status") {
			return
		}
		// The shortest prefix the manifest lacks: everything below it
		// goes if lastApplied has it, or if it sits in a list the
		// manifest replaces.
		var cur any = manifest
		inList := false
		for i, pe := range p {
			isItem := pe.Key != nil || pe.Value != nil
			next, ok := child(cur, pe)
			if ok {
				cur = next
				inList = inList || isItem
				continue
			}
			if pe.Index != nil {
				return
			}
			q := p[:i+1]
			if has(lastApplied, q) || (replaceLists && (inList || isItem)) {
				take.Insert(p)
				prefixes.Insert(q.Copy())
			}
			return
		}
	})
	return take, prefixes
}

// has reports whether doc holds a value at p.
func has(doc map[string]any, p fieldpath.Path) bool {
	var cur any = doc
	for _, pe := range p {
		next, ok := child(cur, pe)
		if !ok {
			return false
		}
		cur = next
	}
	return true
}

// child is the value pe selects in v (a decoded JSON document).
func child(v any, pe fieldpath.PathElement) (any, bool) {
	switch {
	case pe.FieldName != nil:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		x, ok := m[*pe.FieldName]
		return x, ok
	case pe.Key != nil, pe.Value != nil:
		list, ok := v.([]any)
		if !ok {
			return nil, false
		}
		if i := elementIndex(list, pe); i >= 0 {
			return list[i], true
		}
	}
	// An index names a place in an atomic list, not an element: the
	// apply replaces such a list whole, nothing to take.
	return nil, false
}

// elementIndex finds the element of list pe selects by key or value. A
// manifest may leave out a key field the API server defaults (a port's
// protocol: managedFields say k:{"containerPort":80,"protocol":"TCP"},
// the manifest {containerPort: 80}); an element that matches every key
// field it has is taken when none matches them all.
func elementIndex(list []any, pe fieldpath.PathElement) int {
	if pe.Value != nil {
		for i, el := range list {
			if value.Equals(value.NewValueInterface(el), *pe.Value) {
				return i
			}
		}
		return -1
	}
	partial := -1
	for i, el := range list {
		m, ok := el.(map[string]any)
		if !ok {
			continue
		}
		present, equal := 0, true
		for _, f := range *pe.Key {
			x, ok := m[f.Name]
			if !ok {
				continue
			}
			present++
			if !value.Equals(value.NewValueInterface(x), f.Value) {
				equal = false
				break
			}
		}
		switch {
		case !equal || present == 0:
		case present == len(*pe.Key):
			return i
		case partial < 0:
			partial = i
		}
	}
	return partial
}

// takeOverDropped moves the fields the manifest drops (see droppedFields)
// from every other manager's entry into manager's Apply entry, so that
// the apply of body removes them. lastApplied is the live object's
// annotation. It returns the new entries, the prefixes to be deleted
// (for a dry run, which cannot rewrite managedFields first), and whether
// anything moved. Entries of another API version than body's are left
// alone (their paths may differ), as are status subresource entries.
func takeOverDropped(mf []metav1.ManagedFieldsEntry, lastApplied string, body *unstructured.Unstructured, manager string) ([]metav1.ManagedFieldsEntry, *fieldpath.Set, bool, error) {
	if lastApplied == "" {
		return mf, nil, false, nil
	}
	version := body.GetAPIVersion()
	own := -1
	for i, e := range mf {
		if e.Manager == manager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" {
			own = i
		}
	}
	if own >= 0 && mf[own].APIVersion != version {
		return mf, nil, false, nil
	}
	candidate := func(i int, e metav1.ManagedFieldsEntry) bool {
		return i != own && e.Subresource != "status" && e.APIVersion == version && e.FieldsV1 != nil
	}
	others := false
	for i, e := range mf {
		others = others || candidate(i, e)
	}
	if !others {
		// The common case (ferry's entry, the status writers): nothing
		// to decode.
		return mf, nil, false, nil
	}
	var la map[string]any
	if err := utiljson.Unmarshal([]byte(lastApplied), &la); err != nil || la == nil {
		// kubectl would refuse the object; ferry's apply does not need
		// the annotation, so it applies without removing anything.
		return mf, nil, false, nil
	}
	out := append([]metav1.ManagedFieldsEntry(nil), mf...)
	taken, prefixes := fieldpath.NewSet(), fieldpath.NewSet()
	var drop []int
	for i, e := range out {
		if !candidate(i, e) {
			continue
		}
		var s fieldpath.Set
		if err := decodeFields(e, &s); err != nil {
			return nil, nil, false, err
		}
		take, pre := droppedFields(la, body.Object, &s, !nativeGroups[body.GroupVersionKind().Group])
		if take.Empty() {
			continue
		}
		taken, prefixes = taken.Union(take), prefixes.Union(pre)
		rest := s.Difference(take)
		if rest.Empty() {
			drop = append(drop, i)
			continue
		}
		raw, err := rest.ToJSON()
		if err != nil {
			return nil, nil, false, fmt.Errorf("encoding managed fields: %w", err)
		}
		out[i].FieldsV1 = &metav1.FieldsV1{Raw: raw}
	}
	if taken.Empty() {
		return mf, nil, false, nil
	}
	mine := fieldpath.NewSet()
	if own >= 0 {
		if err := decodeFields(out[own], mine); err != nil {
			return nil, nil, false, err
		}
	}
	raw, err := mine.Union(taken).ToJSON()
	if err != nil {
		return nil, nil, false, fmt.Errorf("encoding managed fields: %w", err)
	}
	if own >= 0 {
		out[own].FieldsV1 = &metav1.FieldsV1{Raw: raw}
	} else {
		now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
		out = append(out, metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationApply,
			APIVersion: version, Time: &now, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: raw}})
	}
	// Entries left with no field are removed (the API server would too).
	for j := len(drop) - 1; j >= 0; j-- {
		out = append(out[:drop[j]], out[drop[j]+1:]...)
	}
	return out, prefixes, true, nil
}

// removePaths deletes from doc what each path of set names (a dry run's
// stand-in for the apply that follows a managedFields rewrite).
func removePaths(doc map[string]any, set *fieldpath.Set) {
	set.Iterate(func(p fieldpath.Path) {
		var cur any = doc
		for i, pe := range p {
			if i < len(p)-1 {
				next, ok := child(cur, pe)
				if !ok {
					return
				}
				cur = next
				continue
			}
			removeChild(doc, p[:i], cur, pe)
		}
	})
}

// removeChild deletes pe from parent, which sits at path at in doc (a list
// is replaced in its own parent).
func removeChild(doc map[string]any, at fieldpath.Path, parent any, pe fieldpath.PathElement) {
	switch {
	case pe.FieldName != nil:
		if m, ok := parent.(map[string]any); ok {
			delete(m, *pe.FieldName)
		}
	case pe.Key != nil, pe.Value != nil:
		list, ok := parent.([]any)
		if !ok || len(at) == 0 {
			return
		}
		i := elementIndex(list, pe)
		if i < 0 {
			return
		}
		rest := append(append([]any{}, list[:i]...), list[i+1:]...)
		// The list's own slot: its parent is reached by at minus one.
		var holder any = doc
		for _, x := range at[:len(at)-1] {
			next, ok := child(holder, x)
			if !ok {
				return
			}
			holder = next
		}
		last := at[len(at)-1]
		switch h := holder.(type) {
		case map[string]any:
			if last.FieldName != nil {
				h[*last.FieldName] = rest
			}
		case []any:
			if j := elementIndex(h, last); j >= 0 {
				h[j] = rest
			}
		}
	}
}
