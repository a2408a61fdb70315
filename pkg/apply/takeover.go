package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/csaupgrade"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// Taking objects over from the real kubectl, the way `kubectl apply
// --server-side` does, so a team can switch to ferry (and back) on objects
// it already deployed:
//
//   - ferry applies as field manager "kubectl", kubectl's own server-side
//     manager. The API server treats that name specially: it forgives
//     conflicts with client-side apply on fields whose live value is still
//     the last-applied one, and it keeps the
//     kubectl.kubernetes.io/last-applied-configuration annotation current
//     when the object has one (so going back to client-side apply prunes
//     correctly). The same name also means no conflicts between ferry and a
//     real `kubectl apply --server-side` on the same objects.
//   - The managed fields of the client-side managers (Update operations
//     owning the annotation: kubectl-client-side-apply, kubectl-create
//     --save-config) are merged into "kubectl" with client-go's csaupgrade,
//     so a field removed from the manifest is removed from the object.
//   - Objects ferry applied before it used kubectl's name (manager "ferry")
//     have that Apply entry merged into "kubectl" the same way.

// LastAppliedAnnotation is client-side apply's record of the last applied
// configuration.
const LastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

const (
	// lastAppliedManager co-owns the annotation so that applies that do not
	// carry it do not remove it (kubectl's fieldManagerLastAppliedAnnotation).
	lastAppliedManager = "kubectl-last-applied"
	// legacyFieldManager is the manager ferry applied as before it used kubectl's.
	legacyFieldManager = "ferry"
	// maxPatchRetry bounds the migration's retries on a changed object, as kubectl.
	maxPatchRetry = 5
)

var lastAppliedPath = fieldpath.NewSet(fieldpath.MakePathOrDie("metadata", "annotations", LastAppliedAnnotation))

// liveMeta is what a lookup saw of an existing object.
type liveMeta struct {
	ResourceVersion string
	Annotations     map[string]string
	ManagedFields   []metav1.ManagedFieldsEntry
}

func metaOf(m metav1.Object) *liveMeta {
	return &liveMeta{ResourceVersion: m.GetResourceVersion(), Annotations: m.GetAnnotations(), ManagedFields: m.GetManagedFields()}
}

// upgradedManagedFields is the object's managed fields with client-side
// managers (and ferry's legacy manager when manager is the default) merged
// into manager; changed is false when there is nothing to migrate.
func upgradedManagedFields(m *liveMeta, manager string) ([]metav1.ManagedFieldsEntry, bool, error) {
	names := sets.New[string]()
	for _, e := range csaupgrade.FindFieldsOwners(m.ManagedFields, metav1.ManagedFieldsOperationUpdate, lastAppliedPath) {
		names.Insert(e.Manager)
	}
	obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{ManagedFields: m.ManagedFields}}
	if names.Len() > 0 {
		if err := csaupgrade.UpgradeManagedFields(obj, names, manager); err != nil {
			return nil, false, err
		}
	}
	mf := obj.ManagedFields
	if manager == DefaultFieldManager {
		var err error
		if mf, err = mergeApplyManager(mf, legacyFieldManager, manager); err != nil {
			return nil, false, err
		}
	}
	return mf, !reflect.DeepEqual(mf, m.ManagedFields), nil
}

// mergeApplyManager moves the fields of from's Apply entry into to's (same
// API version), or renames from's entry when to has none: csaupgrade does
// this for Update entries only.
func mergeApplyManager(mf []metav1.ManagedFieldsEntry, from, to string) ([]metav1.ManagedFieldsEntry, error) {
	isApply := func(e metav1.ManagedFieldsEntry, name string) bool {
		return e.Manager == name && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == ""
	}
	fi, ti := -1, -1
	for i, e := range mf {
		switch {
		case isApply(e, from) && fi < 0:
			fi = i
		case isApply(e, to) && ti < 0:
			ti = i
		}
	}
	if fi < 0 {
		return mf, nil
	}
	out := append([]metav1.ManagedFieldsEntry(nil), mf...)
	if ti < 0 {
		out[fi].Manager = to
		return out, nil
	}
	if out[ti].APIVersion != out[fi].APIVersion {
		// One Apply entry per manager; fields of another version cannot
		// be merged without the schema: leave them (at worst a conflict
		// the user sees).
		return mf, nil
	}
	var a, b fieldpath.Set
	if err := decodeFields(out[ti], &a); err != nil {
		return nil, err
	}
	if err := decodeFields(out[fi], &b); err != nil {
		return nil, err
	}
	raw, err := a.Union(&b).ToJSON()
	if err != nil {
		return nil, fmt.Errorf("encoding managed fields: %w", err)
	}
	out[ti].FieldsV1 = &metav1.FieldsV1{Raw: raw}
	return append(out[:fi], out[fi+1:]...), nil
}

func decodeFields(e metav1.ManagedFieldsEntry, s *fieldpath.Set) error {
	if e.FieldsV1 == nil {
		return nil
	}
	if err := s.FromJSON(bytes.NewReader(e.FieldsV1.Raw)); err != nil {
		return fmt.Errorf("decoding managed fields of %q: %w", e.Manager, err)
	}
	return nil
}

// migrate rewrites the managed fields of the object (as m shows it) if
// they need it, with kubectl's JSON patch guarded by the resourceVersion;
// on a conflict the object is read again, up to maxPatchRetry times. It
// returns the object's new resourceVersion when it migrated. With a body
// (plain apply), the fields body drops from the last-applied
// configuration are taken over in the same patch (dropped.go).
func (a *Applier) migrate(ctx context.Context, it *item, m *liveMeta, o ApplyOptions, body *unstructured.Unstructured) (string, bool, error) {
	obj := it.res.Object
	for range maxPatchRetry {
		mf, changed, err := upgradedManagedFields(m, o.FieldManager)
		if err != nil {
			return "", false, err
		}
		if body != nil {
			var took bool
			if mf, _, took, err = takeOverDropped(mf, m.Annotations[LastAppliedAnnotation], body, o.FieldManager); err != nil {
				return "", false, err
			}
			changed = changed || took
		}
		if !changed {
			return "", false, nil
		}
		patch, err := json.Marshal([]map[string]any{
			{"op": "replace", "path": "/metadata/managedFields", "value": mf},
			// "replace", not "test": etcd answers 409 if the object moved.
			{"op": "replace", "path": "/metadata/resourceVersion", "value": m.ResourceVersion},
		})
		if err != nil {
			return "", false, err
		}
		raw, err := a.rest.Patch(types.JSONPatchType).
			AbsPath(resourcePath(it.mapping, obj.GetNamespace(), obj.GetName())).
			Param("fieldManager", o.FieldManager).Body(patch).Do(ctx).Raw()
		if err == nil {
			var after metav1.PartialObjectMetadata
			if err := json.Unmarshal(raw, &after); err != nil {
				return "", true, fmt.Errorf("decoding the server's answer: %w", err)
			}
			return after.ResourceVersion, true, nil
		}
		if err = statusFromBody(err, raw); !apierrors.IsConflict(err) {
			return "", false, err
		}
		cur, err := a.meta.Resource(it.mapping.Resource).Namespace(obj.GetNamespace()).Get(ctx, obj.GetName(), metav1.GetOptions{})
		if err != nil {
			return "", false, err
		}
		m = metaOf(cur)
	}
	return "", false, fmt.Errorf("the object kept changing while its managed fields were migrated")
}

// saveLastApplied is kubectl's saveLastApplyAnnotationIfNecessary: before
// "kubectl" owns the annotation through a migration (and then drops it
// from its applies, which carry no annotation), another Apply manager
// takes it so that it stays, and the server keeps it current.
func (a *Applier) saveLastApplied(ctx context.Context, it *item, live *unstructured.Unstructured, o ApplyOptions) error {
	if o.FieldManager != DefaultFieldManager {
		return nil // the server keeps the annotation current for "kubectl" only
	}
	v, ok := live.GetAnnotations()[LastAppliedAnnotation]
	if !ok || len(csaupgrade.FindFieldsOwners(live.GetManagedFields(), metav1.ManagedFieldsOperationApply, lastAppliedPath)) > 0 {
		return nil
	}
	obj := it.res.Object
	body := map[string]any{"apiVersion": obj.GetAPIVersion(), "kind": obj.GetKind(),
		"metadata": map[string]any{"name": obj.GetName(), "annotations": map[string]any{LastAppliedAnnotation: v}}}
	if ns := obj.GetNamespace(); ns != "" {
		body["metadata"].(map[string]any)["namespace"] = ns
	}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	raw, err := a.rest.Patch(types.ApplyPatchType).
		AbsPath(resourcePath(it.mapping, obj.GetNamespace(), obj.GetName())).
		Param("fieldManager", lastAppliedManager).Body(data).Do(ctx).Raw()
	return statusFromBody(err, raw)
}

// lastAppliedValue is the annotation client-side apply writes for body:
// the object without the annotation, JSON, as kubectl and the API server
// encode it (so a re-apply of the same manifest changes nothing).
func lastAppliedValue(body *unstructured.Unstructured) (string, error) {
	u := body.DeepCopy()
	ann := u.GetAnnotations()
	delete(ann, LastAppliedAnnotation)
	if len(ann) == 0 {
		unstructured.RemoveNestedField(u.Object, "metadata", "annotations")
	} else {
		u.SetAnnotations(ann)
	}
	data, err := runtime.Encode(unstructured.UnstructuredJSONScheme, u)
	if err != nil {
		return "", fmt.Errorf("encoding %s: %w", LastAppliedAnnotation, err)
	}
	return string(data), nil
}

// unknownFieldRE finds the paths structured-merge-diff names when a
// server-side apply carries a field the schema does not declare:
// "failed to create typed patch object (...): .spec.bogus: field not
// declared in schema" (one per line when there are several).
var unknownFieldRE = regexp.MustCompile(`(\.[^\s:]+): field not declared in schema`)

// dropUnknownFields removes from body the undeclared fields err names and
// returns their paths; none when err is not that error or a path cannot be
// found (the error then stands).
func dropUnknownFields(body map[string]any, err error) []string {
	ms := unknownFieldRE.FindAllStringSubmatch(err.Error(), -1)
	var paths []string
	for _, m := range ms {
		s, ok := locate(body, m[1])
		if !ok {
			return nil
		}
		s.remove()
		paths = append(paths, m[1])
	}
	return paths
}

// slot is a place in a decoded JSON document.
type slot struct {
	value  func() any
	remove func()
}

// locate finds the field a server-side apply conflict names, in
// structured-merge-diff's path syntax: ".spec.replicas",
// `.spec.template.spec.containers[name="app"].image`,
// `.spec.ports[port=80,protocol="TCP"]`, `.metadata.finalizers[="x"]`,
// ".x[2]". Field names may contain dots (annotation keys), so each
// ".name" is matched against the document's keys, longest first.
func locate(doc map[string]any, path string) (slot, bool) {
	var cur any = doc
	var s slot
	set := func(any) {}
	for path != "" {
		switch path[0] {
		case '.':
			m, ok := cur.(map[string]any)
			if !ok {
				return slot{}, false
			}
			key := ""
			for k := range m {
				rest := path[1:]
				if strings.HasPrefix(rest, k) && (len(rest) == len(k) || rest[len(k)] == '.' || rest[len(k)] == '[') && len(k) > len(key) {
					key = k
				}
			}
			if key == "" {
				return slot{}, false
			}
			v := m[key]
			s = slot{value: func() any { return v }, remove: func() { delete(m, key) }}
			set = func(x any) { m[key] = x }
			cur, path = v, path[1+len(key):]
		case '[':
			end := closingBracket(path)
			if end < 0 {
				return slot{}, false
			}
			sel := path[1:end]
			list, ok := cur.([]any)
			if !ok {
				return slot{}, false
			}
			i := findElement(list, sel)
			if i < 0 {
				return slot{}, false
			}
			v, setList := list[i], set
			s = slot{value: func() any { return v }, remove: func() {
				setList(append(append([]any{}, list[:i]...), list[i+1:]...))
			}}
			set = func(x any) { list[i] = x }
			cur, path = v, path[end+1:]
		default:
			return slot{}, false
		}
	}
	return s, s.value != nil
}

// closingBracket is the index of the "]" closing path[0]'s "[", skipping
// quoted strings.
func closingBracket(path string) int {
	inStr := false
	for i := 1; i < len(path); i++ {
		switch c := path[i]; {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case !inStr && c == ']':
			return i
		}
	}
	return -1
}

// findElement is the index in list of the element a selector names:
// "=value" (set), "3" (index), or "k=v,k2=v2" (associative list keys,
// values in JSON).
func findElement(list []any, sel string) int {
	if strings.HasPrefix(sel, "=") {
		var want any
		if json.Unmarshal([]byte(sel[1:]), &want) != nil {
			return -1
		}
		for i, v := range list {
			if sameJSON(v, want) {
				return i
			}
		}
		return -1
	}
	if n, err := strconv.Atoi(sel); err == nil {
		if n >= 0 && n < len(list) {
			return n
		}
		return -1
	}
	keys := map[string]any{}
	for _, kv := range splitTopLevel(sel) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return -1
		}
		var val any
		if json.Unmarshal([]byte(v), &val) != nil {
			return -1
		}
		keys[k] = val
	}
	for i, el := range list {
		m, ok := el.(map[string]any)
		if !ok {
			continue
		}
		match := true
		for k, want := range keys {
			if !sameJSON(m[k], want) {
				match = false
				break
			}
		}
		if match {
			return i
		}
	}
	return -1
}

// splitTopLevel splits "a=1,b=\"x,y\"" on the commas outside quotes.
func splitTopLevel(s string) []string {
	var out []string
	inStr, start := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case !inStr && c == ',':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
