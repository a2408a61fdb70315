package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
)

// The field managers kubectl's own rollout restart and set image write
// with, so managedFields name the same owner whichever tool ran.
const (
	rolloutFieldManager = "kubectl-rollout"
	setFieldManager     = "kubectl-set"
)

// restartedAtAnnotation is what kubectl rollout restart sets on the pod
// template: a changed template is a new rollout.
const restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// liveObj is one live object a verb acts on, with the resource it came
// from; or, when err is set, a named object that could not be fetched
// (NotFound), kept in its place among the others because kubectl reports
// it there.
type liveObj struct {
	obj     *unstructured.Unstructured
	mapping *meta.RESTMapping
	err     error
}

// found splits targets into the objects fetched and the errors of those
// that were not.
func found(objs []liveObj) ([]liveObj, []error) {
	var ok []liveObj
	var errs []error
	for _, o := range objs {
		if o.err != nil {
			errs = append(errs, o.err)
		} else {
			ok = append(ok, o)
		}
	}
	return ok, errs
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

// rolloutRestart is `kubectl rollout restart deployment/NAME`: it stamps
// the pod template with the time, which the controller sees as a new
// template and rolls out, exactly as kubectl does (the same annotation, the
// same strategic merge patch), so a later kubectl rollout restart or
// rollout history sees nothing foreign.
func (e *env) rolloutRestart(ctx context.Context, args []string) error {
	fs := e.flags("rollout restart")
	var (
		sel     selection
		output  string
		manager string
	)
	sel.register(fs, false)
	fs.StringVarP(&output, "output", "o", "", "name, yaml or json")
	fs.StringVar(&manager, "field-manager", rolloutFieldManager, "field manager of the change")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := checkOutput(output); err != nil {
		return err
	}
	a, err := e.getApplier()
	if err != nil {
		return err
	}
	all, err := e.targets(ctx, a, fs.Args(), sel, true)
	if err != nil {
		return err
	}
	// kubectl reports the objects it could not fetch first, then acts on
	// the rest.
	objs, errs := found(all)
	if len(objs) == 0 && len(errs) == 0 {
		ns, _, _ := e.resolvedNamespace()
		fmt.Fprintf(e.stderr, "No resources found in %s namespace.\n", ns)
		return nil
	}
	// One time for the whole command, as kubectl: its RFC 3339 form has
	// seconds only, so a second restart within the same second changes
	// nothing and is refused below rather than silently doing nothing.
	now := time.Now().Format(time.RFC3339)
	for _, t := range objs {
		patch, err := restartPatch(t, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		got, err := t.client(a).Patch(ctx, t.obj.GetName(), types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: manager})
		if err != nil {
			errs = append(errs, fmt.Errorf("failed to patch: %w", err))
			continue
		}
		if err := e.resultLine(got, "restarted", output, apply.DryRunNone); err != nil {
			return err
		}
	}
	return e.printErrors(errs)
}

// restartPatch is the strategic merge patch kubectl rollout restart sends
// for one object, or kubectl's refusal: only Deployments (not paused),
// DaemonSets and StatefulSets restart.
func restartPatch(t liveObj, now string) ([]byte, error) {
	gvk := t.obj.GroupVersionKind()
	resource := t.mapping.Resource.Resource
	if g := t.mapping.Resource.Group; g != "" {
		resource += "." + g
	}
	if (gvk.Group != "apps" && gvk.Group != "extensions") || (gvk.Kind != "Deployment" && gvk.Kind != "DaemonSet" && gvk.Kind != "StatefulSet") {
		return nil, fmt.Errorf("error: %s %q restarting is not supported", resource, t.obj.GetName())
	}
	if paused, _, _ := unstructured.NestedBool(t.obj.Object, "spec", "paused"); paused && gvk.Kind == "Deployment" {
		return nil, fmt.Errorf("error: %s %q can't restart paused deployment (run rollout resume first)", resource, t.obj.GetName())
	}
	if old, _, _ := unstructured.NestedString(t.obj.Object, "spec", "template", "metadata", "annotations", restartedAtAnnotation); old == now {
		return nil, fmt.Errorf("failed to create patch for %s: if restart has already been triggered within the past second, please wait before attempting to trigger another", t.obj.GetName())
	}
	patch := map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]any{restartedAtAnnotation: now}}}}}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("encoding the restart patch: %w", err)
	}
	return b, nil
}

// podSpecPath is where a workload keeps its pod spec, for the kinds kubectl
// set image knows; nil for any other kind.
func podSpecPath(kind string) []string {
	switch kind {
	case "Pod":
		return []string{"spec"}
	case "CronJob":
		return []string{"spec", "jobTemplate", "spec", "template", "spec"}
	case "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "ReplicationController", "Job":
		return []string{"spec", "template", "spec"}
	}
	return nil
}

// imageUpdate is one CONTAINER=IMAGE argument of set image.
type imageUpdate struct{ container, image string }

// splitImageArgs separates set image's resources from its CONTAINER=IMAGE
// pairs with kubectl's rules: every resource comes first. An empty list of
// resources is left to targets, which refuses it in kubectl's words.
func splitImageArgs(args []string) ([]string, []imageUpdate, error) {
	var resources []string
	var updates []imageUpdate
	var invalid []string
	for _, s := range args {
		pair := strings.Contains(s, "=") && s[0] != '='
		// kubectl counts NAME- (its removal syntax) as a pair, then
		// rejects it as an invalid image.
		isPair := pair || (strings.HasSuffix(s, "-") && s != "-")
		switch {
		case isPair && !pair:
			invalid = append(invalid, s)
		case isPair:
			c, img, _ := strings.Cut(s, "=")
			updates = append(updates, imageUpdate{c, img})
		case len(updates) > 0 || len(invalid) > 0:
			return nil, nil, fmt.Errorf("all resources must be specified before image changes: %s", s)
		default:
			resources = append(resources, s)
		}
	}
	if len(invalid) > 0 {
		return nil, nil, fmt.Errorf("invalid image format: %s", strings.Join(invalid, ", "))
	}
	return resources, updates, nil
}

// checkImageUpdates is kubectl's validation of the pairs, which comes after
// the resources are resolved: `set image deployment/web app` complains
// about "app" as a resource, not about the missing image.
func checkImageUpdates(updates []imageUpdate) error {
	if len(updates) == 0 {
		return errors.New("at least one image update is required")
	}
	if len(updates) > 1 {
		for _, u := range updates {
			if u.container == "*" {
				return errors.New("all containers are already specified by *, but saw more than one container_name=container_image pairs")
			}
		}
	}
	return nil
}

// setImage is `kubectl set image deployment/NAME CONTAINER=IMAGE...`: a
// strategic merge patch of the changed containers' images, as kubectl
// sends, printing "deployment.apps/NAME image updated".
func (e *env) setImage(ctx context.Context, args []string) error {
	fs := e.flags("set image")
	var (
		sel             selection
		output, dryRun  string
		manager, record string
	)
	sel.register(fs, true)
	fs.StringVarP(&output, "output", "o", "", "name, yaml or json")
	fs.StringVar(&dryRun, "dry-run", "none", "none, client (print, send nothing) or server")
	fs.Lookup("dry-run").NoOptDefVal = "client"
	fs.StringVar(&manager, "field-manager", setFieldManager, "field manager of the change")
	fs.StringVar(&record, "record", "", "accepted for compatibility (deprecated in kubectl); ignored")
	fs.Lookup("record").NoOptDefVal = "true"
	if err := e.parse(fs, args[1:]); err != nil {
		return err
	}
	if err := checkOutput(output); err != nil {
		return err
	}
	dr, err := parseDryRun(dryRun)
	if err != nil {
		return err
	}
	resources, updates, err := splitImageArgs(fs.Args())
	if err != nil {
		return err
	}
	a, err := e.getApplier()
	if err != nil {
		return err
	}
	all, err := e.targets(ctx, a, resources, sel, false)
	if err != nil {
		return err
	}
	// kubectl set image changes nothing when any object is missing.
	objs, errs := found(all)
	if len(errs) > 0 {
		return e.printErrors(errs)
	}
	if err := checkImageUpdates(updates); err != nil {
		return err
	}
	for _, t := range objs {
		changed, patch, missing, err := setImages(t, updates)
		errs = append(errs, missing...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if patch == nil {
			continue // nothing to change: kubectl prints nothing either
		}
		if dr == apply.DryRunClient {
			if err := e.resultLine(changed, "image updated", output, dr); err != nil {
				return err
			}
			continue
		}
		opts := metav1.PatchOptions{FieldManager: manager}
		if dr == apply.DryRunServer {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		got, err := t.client(a).Patch(ctx, t.obj.GetName(), types.StrategicMergePatchType, patch, opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("failed to patch image update to pod template: %w", err))
			continue
		}
		if err := e.resultLine(got, "image updated", output, dr); err != nil {
			return err
		}
	}
	return e.printErrors(errs)
}

// setImages applies the updates to a copy of the object and returns it with
// the strategic merge patch that makes the same change on the server (nil
// when no image changes), plus one error per container name found in
// neither the containers nor the init containers, which kubectl reports
// while still patching the containers it did find. "*" is every container.
func setImages(t liveObj, updates []imageUpdate) (*unstructured.Unstructured, []byte, []error, error) {
	path := podSpecPath(t.obj.GetKind())
	if path == nil {
		return nil, nil, nil, fmt.Errorf("error: %s the object is not a pod or does not have a pod template: *%s.%s", t.resourceName(), t.obj.GroupVersionKind().Version, t.obj.GetKind())
	}
	obj := t.obj.DeepCopy()
	spec, _, err := unstructured.NestedMap(obj.Object, path...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading the pod spec of %s: %w", t.resourceName(), err)
	}
	patchSpec := map[string]any{}
	var missing []error
	found := map[string]bool{}
	for _, list := range []string{"initContainers", "containers"} {
		containers, _, err := unstructured.NestedSlice(spec, list)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("reading the %s of %s: %w", list, t.resourceName(), err)
		}
		var changed []any
		for _, c := range containers {
			cm, ok := c.(map[string]any)
			if !ok {
				continue
			}
			name, _ := cm["name"].(string)
			for _, u := range updates {
				if u.container != name && u.container != "*" {
					continue
				}
				found[u.container] = true
				if cm["image"] != u.image {
					cm["image"] = u.image
					// The list's merge key (name) picks the container;
					// only changed containers are in the patch.
					changed = append(changed, map[string]any{"name": name, "image": u.image})
				}
			}
		}
		if len(changed) > 0 {
			patchSpec[list] = changed
			if err := unstructured.SetNestedSlice(spec, containers, list); err != nil {
				return nil, nil, nil, fmt.Errorf("updating the %s of %s: %w", list, t.resourceName(), err)
			}
		}
	}
	for _, u := range updates {
		if !found[u.container] {
			missing = append(missing, fmt.Errorf("error: unable to find container named %q", u.container))
		}
	}
	if len(patchSpec) == 0 {
		return obj, nil, missing, nil
	}
	if err := unstructured.SetNestedMap(obj.Object, spec, path...); err != nil {
		return nil, nil, nil, fmt.Errorf("updating the pod spec of %s: %w", t.resourceName(), err)
	}
	patch := any(patchSpec)
	for i := len(path) - 1; i >= 0; i-- {
		patch = map[string]any{path[i]: patch}
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encoding the image patch: %w", err)
	}
	return obj, b, missing, nil
}
