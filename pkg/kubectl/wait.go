package kubectl

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/jsonpath"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
)

// errWaitTimeout is kubectl's (apimachinery's) wording, which scripts and
// people grep job logs for.
var errWaitTimeout = errors.New("timed out waiting for the condition")

// waitCond is one --for: create, delete, or a check of the live object
// (condition=..., jsonpath=...).
type waitCond struct {
	create, delete bool
	check          func(*unstructured.Unstructured) (bool, error)
}

// parseWaitConds reads --for values as kubectl does: "create" and "delete"
// in any case, condition=NAME[=VALUE] (VALUE defaults to true; both
// compared case-insensitively), jsonpath=EXPR[=VALUE] (no VALUE: the field
// exists).
func parseWaitConds(fors []string) ([]waitCond, error) {
	var conds []waitCond
	for _, f := range fors {
		switch {
		case strings.EqualFold(f, "delete"):
			conds = append(conds, waitCond{delete: true})
		case strings.EqualFold(f, "create"):
			conds = append(conds, waitCond{create: true})
		case strings.HasPrefix(f, "condition="):
			name, value, ok := strings.Cut(strings.TrimPrefix(f, "condition="), "=")
			if !ok {
				value = "true"
			}
			conds = append(conds, waitCond{check: func(u *unstructured.Unstructured) (bool, error) { return conditionMet(u, name, value), nil }})
		case strings.HasPrefix(f, "jsonpath="):
			check, err := jsonPathCheck(strings.TrimPrefix(f, "jsonpath="))
			if err != nil {
				return nil, err
			}
			conds = append(conds, waitCond{check: check})
		default:
			return nil, fmt.Errorf("unrecognized condition: %q", f)
		}
	}
	if len(conds) == 0 {
		// kubectl 1.32's words for a missing --for.
		return nil, fmt.Errorf("unrecognized condition: %q", "")
	}
	return conds, nil
}

// conditionMet is kubectl wait's condition check: the status condition of
// that type has that status, and was written for the object's current
// generation (a Deployment whose spec just changed is still "Available"
// from the previous rollout until its controller catches up).
func conditionMet(u *unstructured.Unstructured, name, value string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		cm, ok := c.(map[string]any)
		if !ok {
			continue
		}
		typ, _, _ := unstructured.NestedString(cm, "type")
		status, found, _ := unstructured.NestedString(cm, "status")
		if !strings.EqualFold(typ, name) || !found {
			continue
		}
		if gen, ok, _ := unstructured.NestedInt64(u.Object, "metadata", "generation"); ok {
			observed, found, _ := unstructured.NestedInt64(cm, "observedGeneration")
			if !found {
				observed, found, _ = unstructured.NestedInt64(u.Object, "status", "observedGeneration")
			}
			if found && observed < gen {
				return false
			}
		}
		return strings.EqualFold(status, value)
	}
	return false
}

// relaxedJSONPath accepts kubectl wait's forms of a path: "{.a.b}", "{a.b}",
// ".a.b" and "a.b".
var relaxedJSONPath = regexp.MustCompile(`^\{\.?([^{}]+)\}$|^\.?([^{}]+)$`)

// jsonPathCheck builds the check of --for=jsonpath=EXPR[=VALUE]. The
// input is split on single "=" ("==" in a filter stays), as kubectl does.
func jsonPathCheck(input string) (func(*unstructured.Unstructured) (bool, error), error) {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(input); i++ {
		if input[i] == '=' {
			if i+1 < len(input) && input[i+1] == '=' {
				cur.WriteString("==")
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(input[i])
	}
	parts = append(parts, cur.String())
	if len(parts) > 2 {
		return nil, errors.New("jsonpath wait format must be --for=jsonpath='{.status.readyReplicas}'=3 or --for=jsonpath='{.status.readyReplicas}'")
	}
	expr := parts[0]
	if expr == "" {
		return nil, errors.New("jsonpath expression cannot be empty")
	}
	m := relaxedJSONPath.FindStringSubmatch(expr)
	if m == nil {
		return nil, errors.New("unexpected path string, expected a 'name1.name2' or '.name1.name2' or '{name1.name2}' or '{.name1.name2}'")
	}
	field := m[1]
	if field == "" {
		field = m[2]
	}
	jp := jsonpath.New("wait").AllowMissingKeys(true)
	if err := jp.Parse("{." + field + "}"); err != nil {
		return nil, fmt.Errorf("parsing the jsonpath %s: %w", expr, err)
	}
	anyValue := len(parts) == 1
	var want string
	if !anyValue {
		want = strings.Trim(parts[1], `'"`)
		if want == "" {
			return nil, errors.New("jsonpath wait has to have a value after equal sign, like --for=jsonpath='{.status.readyReplicas}'=3")
		}
	}
	return func(u *unstructured.Unstructured) (bool, error) {
		res, err := jp.FindResults(u.Object)
		if err != nil {
			return false, err
		}
		if len(res) == 0 || len(res[0]) == 0 {
			return false, nil
		}
		if len(res) > 1 {
			return false, errors.New("given jsonpath expression matches more than one list")
		}
		if len(res[0]) > 1 {
			return false, errors.New("given jsonpath expression matches more than one value")
		}
		if anyValue {
			return true, nil
		}
		v := res[0][0]
		if v.Kind() == reflect.Interface {
			v = v.Elem()
		}
		switch v.Interface().(type) {
		case map[string]any, []any:
			return false, errors.New("jsonpath leads to a nested object or list which is not supported")
		}
		return strings.TrimSpace(fmt.Sprint(v.Interface())) == strings.TrimSpace(want), nil
	}, nil
}

// wait is `kubectl wait --for=... [--timeout=30s] TYPE/NAME...`. One
// deadline covers the whole command, as in kubectl: after it every object
// still waited for times out at once. Each object is watched (a list and a
// watch restricted to its name), so a condition met is seen when the server
// writes it, not at the next poll.
func (e *env) wait(ctx context.Context, args []string) error {
	fs := e.flags("wait")
	var (
		fors    []string
		timeout time.Duration
		sel     selection
		output  string
	)
	fs.StringArrayVar(&fors, "for", nil, "create, delete, condition=NAME[=VALUE] or jsonpath=EXPR[=VALUE]; repeatable (all must hold)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait; 0 checks once, negative waits a week")
	sel.register(fs, true)
	fs.StringVarP(&output, "output", "o", "", "name, yaml or json")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := checkOutput(output); err != nil {
		return err
	}
	conds, err := parseWaitConds(fors)
	if err != nil {
		return err
	}
	if timeout < 0 {
		timeout = 168 * time.Hour
	}
	ctx, cancel := timeoutCtx(ctx, timeout)
	defer cancel()
	a, err := e.getApplier()
	if err != nil {
		return err
	}
	isDelete := false
	for _, c := range conds {
		isDelete = isDelete || c.delete
		if c.create {
			if err := e.waitCreated(ctx, a, fs.Args(), sel); err != nil {
				return err
			}
		}
	}
	objs, err := e.targets(ctx, a, fs.Args(), sel, false)
	if err != nil {
		return err
	}
	if len(objs) == 0 && !isDelete {
		return errors.New("no matching resources found")
	}
	// Objects in the order given, a missing one's error in its place, as
	// kubectl visits them.
	var errs []error
	for _, t := range objs {
		if t.err != nil {
			// An object already gone is what --for=delete waits for.
			if !isDelete || !apierrors.IsNotFound(t.err) {
				errs = append(errs, t.err)
			}
			continue
		}
		for _, c := range conds {
			got, err := e.waitOne(ctx, a, t, c, timeout)
			if err != nil {
				errs = append(errs, err)
				break
			}
			if err := e.resultLine(got, "condition met", output, apply.DryRunNone); err != nil {
				return err
			}
		}
	}
	return e.printErrors(errs)
}

// waitCreated polls (every 500 ms, as kubectl) until every named object
// exists, for --for=create.
func (e *env) waitCreated(ctx context.Context, a *apply.Applier, args []string, sel selection) error {
	for {
		objs, err := e.targets(ctx, a, args, sel, false)
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		missing := err != nil || len(objs) == 0
		for _, o := range objs {
			if o.err != nil && !apierrors.IsNotFound(o.err) {
				return o.err
			}
			missing = missing || o.err != nil
		}
		if !missing {
			return nil
		}
		select {
		case <-ctx.Done():
			return errWaitTimeout
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitOne waits for one condition on one object and returns the object to
// print.
func (e *env) waitOne(ctx context.Context, a *apply.Applier, t liveObj, c waitCond, timeout time.Duration) (*unstructured.Unstructured, error) {
	if c.create {
		return t.obj, nil
	}
	rc := t.client(a)
	name := t.obj.GetName()
	if timeout == 0 {
		// --timeout=0: one look, no waiting.
		got, err := rc.Get(ctx, name, metav1.GetOptions{})
		if c.delete && apierrors.IsNotFound(err) {
			return t.obj, nil
		}
		if err != nil {
			return nil, err
		}
		if !c.delete {
			ok, err := c.check(got)
			if err != nil {
				return nil, err
			}
			if ok {
				return got, nil
			}
		}
		return nil, fmt.Errorf("condition not met for %s", t.resourceName())
	}
	check := func(u *unstructured.Unstructured) (bool, error) {
		if c.delete {
			return false, nil
		}
		return c.check(u)
	}
	got, err := watchObject(ctx, rc, name, check, func(err error) {
		fmt.Fprintf(e.stderr, "error: An error occurred while waiting for the condition to be satisfied: %v\n", err)
	})
	switch {
	case err == nil && got == nil && c.delete:
		return t.obj, nil // gone: kubectl prints the object as it was
	case err == nil && got == nil:
		return nil, apierrors.NewNotFound(t.mapping.Resource.GroupResource(), name)
	case err == nil:
		return got, nil
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return nil, fmt.Errorf("%w on %s", errWaitTimeout, t.resourceName())
	default:
		return nil, err
	}
}

// watchObject lists and watches one object by name until check says yes
// (returning the object) or it is deleted (returning nil). A watch the
// server ends (its timeout, or 410 Gone after compaction) is resumed from a
// fresh list, so no change is missed. The list is kubectl's precondition
// too: an object already gone returns nil at once. Error events are
// reported through warn and the watch goes on, as kubectl does.
//
// This is client-go's watchtools.UntilWithSync without the informer
// machinery, whose tools/cache dependency would need a module the main
// module does not have.
func watchObject(ctx context.Context, rc dynamic.ResourceInterface, name string, check func(*unstructured.Unstructured) (bool, error), warn func(error)) (*unstructured.Unstructured, error) {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for {
		list, err := rc.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", name, err)
		}
		if len(list.Items) == 0 {
			return nil, nil
		}
		obj := &list.Items[0]
		if ok, err := check(obj); ok || err != nil {
			return obj, err
		}
		w, err := rc.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.GetResourceVersion()})
		if err != nil {
			return nil, fmt.Errorf("watching %s: %w", name, err)
		}
		got, done, err := drainWatch(ctx, w, check, warn)
		w.Stop()
		if done || err != nil {
			return got, err
		}
	}
}

// drainWatch reads one watch until check says yes, the object is deleted
// (done, nil object), the context ends or the watch does (not done: list
// again).
func drainWatch(ctx context.Context, w watch.Interface, check func(*unstructured.Unstructured) (bool, error), warn func(error)) (*unstructured.Unstructured, bool, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, false, nil
			}
			switch ev.Type {
			case watch.Deleted:
				return nil, true, nil
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
					return nil, false, nil // resume from a fresh list
				}
				warn(err)
				continue
			}
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			if met, err := check(u); met || err != nil {
				return u, true, err
			}
		}
	}
}
