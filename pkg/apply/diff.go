package apply

import (
	"context"
	"fmt"
	"io"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// DiffOptions are kubectl diff's flags; the fields mean what they mean in
// ApplyOptions (Out gets the diff, ErrOut per-object errors).
type DiffOptions struct {
	Namespace         string
	NamespaceExplicit bool
	FieldManager      string
	Force             bool
	ServerSide        bool
	Annotations       map[string]string
	Out, ErrOut       io.Writer
}

// DiffResult: Changed is kubectl diff's exit status 1; Result holds errors
// (exit status >1 in kubectl).
type DiffResult struct {
	Changed bool
	*Result
}

// Diff shows what Apply would change: for each object a server-side dry-run
// apply, and a unified diff of the live object (empty when it does not
// exist) against the dry-run result, both without managedFields,
// resourceVersion and generation (which always differ and say nothing).
// Objects are printed in input order.
func (a *Applier) Diff(ctx context.Context, objs []*Object, o DiffOptions) (*DiffResult, error) {
	diffs := make([]string, len(objs))
	res, err := a.Apply(ctx, objs, ApplyOptions{
		Namespace: o.Namespace, NamespaceExplicit: o.NamespaceExplicit,
		FieldManager: o.FieldManager, Force: o.Force, Annotations: o.Annotations,
		DryRun: DryRunServer, ServerSide: o.ServerSide,
	})
	if err != nil {
		return nil, err
	}
	dr := &DiffResult{Result: res}
	a.each(ctx, itemsOf(res), func(it *item) {
		r := it.res
		if r.Err != nil || r.Live == nil {
			return
		}
		obj := r.Object
		gvk := obj.GroupVersionKind()
		m, ok := builtinMappings[gvk]
		var err error
		if !ok {
			m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		}
		if err != nil {
			r.Err = err
			return
		}
		live, err := a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()).Get(ctx, obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			live, err = nil, nil
		}
		if err != nil {
			r.Err = err
			return
		}
		from, to := diffYAML(live), diffYAML(r.Live)
		if from == to {
			return
		}
		name := fmt.Sprintf("%s.%s.%s.%s", strings.ReplaceAll(gvk.GroupVersion().String(), "/", "."), gvk.Kind, obj.GetNamespace(), obj.GetName())
		name = strings.TrimPrefix(strings.ReplaceAll(name, "..", "."), ".")
		diffs[idxOf(res, r)] = unifiedDiff("live/"+name, "merged/"+name, from, to)
	})
	for _, d := range diffs {
		if d != "" {
			dr.Changed = true
			if o.Out != nil {
				io.WriteString(o.Out, d)
			}
		}
	}
	res.Failed = 0
	for _, r := range res.Items {
		if r.Err != nil {
			res.Failed++
			if o.ErrOut != nil {
				msg := r.msg
				if msg == "" || r.Action != "" {
					msg = errorMessage(r.Object, "diffing", r.Err)
				}
				fmt.Fprintln(o.ErrOut, msg)
			}
		}
	}
	return dr, nil
}

func itemsOf(r *Result) []*item {
	out := make([]*item, len(r.Items))
	for i, it := range r.Items {
		out[i] = &item{res: it}
	}
	return out
}

func idxOf(r *Result, it *ItemResult) int {
	for i, x := range r.Items {
		if x == it {
			return i
		}
	}
	return -1
}

// diffYAML is the object as YAML without the fields every write changes.
func diffYAML(u *unstructured.Unstructured) string {
	if u == nil {
		return ""
	}
	u = u.DeepCopy()
	u.SetManagedFields(nil)
	u.SetResourceVersion("")
	u.SetGeneration(0)
	b, err := yaml.Marshal(u.Object)
	if err != nil {
		return fmt.Sprintf("# cannot encode: %v\n", err)
	}
	return string(b)
}
