package apply

import (
	"context"
	"io"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeleteOptions are kubectl delete -f's flags.
type DeleteOptions struct {
	// Namespace and NamespaceExplicit as in ApplyOptions.
	Namespace         string
	NamespaceExplicit bool
	// IgnoreNotFound makes a missing object silent and not a failure.
	IgnoreNotFound bool
	// Propagation defaults to Background, as kubectl.
	Propagation metav1.DeletionPropagation
	// DryRunServer sends dryRun=All.
	DryRunServer bool
	Out, ErrOut  io.Writer
}

// Delete deletes objs, printing `deployment.apps "x" deleted` per object in
// input order. Objects are deleted in the reverse of the apply stages
// (ordinary objects, then *Class kinds, then CRDs, Namespaces and other
// cluster-scoped kinds), so custom resources go before their CRD and a
// namespace last. It does not wait for finalizers.
func (a *Applier) Delete(ctx context.Context, objs []*Object, o DeleteOptions) (*Result, error) {
	if o.Propagation == "" {
		o.Propagation = metav1.DeletePropagationBackground
	}
	ao := ApplyOptions{Namespace: o.Namespace, NamespaceExplicit: o.NamespaceExplicit}
	p := newPrinter(len(objs), o.Out, o.ErrOut)
	res := &Result{Items: make([]*ItemResult, len(objs))}
	var stages [numStages][]*item
	idx := map[*item]int{}
	for i, obj := range objs {
		it := &item{res: &ItemResult{Object: obj}}
		res.Items[i], idx[it] = it.res, i
		if err := a.mapItem(it, ao); err != nil {
			it.res.Err = err
			it.res.msg = errorMessage(obj, "deleting", err)
			p.done(i, it.res)
			continue
		}
		it.stage = stageOf(obj.GroupVersionKind().GroupKind(), it.mapping)
		stages[it.stage] = append(stages[it.stage], it)
	}
	suffix := ""
	do := metav1.DeleteOptions{PropagationPolicy: &o.Propagation}
	if o.DryRunServer {
		do.DryRun = []string{metav1.DryRunAll}
		suffix = " (server dry run)"
	}
	for s := numStages - 1; s >= 0; s-- {
		a.each(ctx, stages[s], func(it *item) {
			obj := it.res.Object
			err := a.dyn.Resource(it.mapping.Resource).Namespace(obj.GetNamespace()).Delete(ctx, obj.GetName(), do)
			switch {
			case err == nil:
				it.res.Action = Deleted
				it.res.msg = kindGroup(obj.Unstructured) + " \"" + obj.GetName() + "\" deleted" + suffix
			case apierrors.IsNotFound(err) && o.IgnoreNotFound:
				// silent, as kubectl --ignore-not-found
				it.res.msg = ""
			default:
				it.res.Err = err
				it.res.msg = errorMessage(obj, "deleting", err)
			}
			p.done(idx[it], it.res)
		})
	}
	for _, it := range res.Items {
		if it.Err != nil {
			res.Failed++
		}
	}
	return res, ctx.Err()
}
