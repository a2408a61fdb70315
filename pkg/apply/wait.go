package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Wait polls objs until every one is Current by kstatus (Deployments rolled
// out, StatefulSets and DaemonSets updated, Jobs complete, other kinds by
// their Ready condition or by existing). Each change of an object's status
// is printed to progress ("deployment.apps/x: InProgress: <message>").
//
// It fails at once when an object is Failed, and after timeout with the
// objects still not Current and their status message:
//
//	timed out waiting for deployment.apps/shark-app: InProgress: Deployment does not have minimum availability.
//
// Objects must carry their namespace (Apply sets it).
func (a *Applier) Wait(ctx context.Context, objs []*Object, timeout time.Duration, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	last := make([]*status.Result, len(objs))
	current := make([]bool, len(objs))
	interval := 100 * time.Millisecond
	start := time.Now()
	for {
		var failed []error
		var wg sync.WaitGroup
		sem := make(chan struct{}, a.opts.Concurrency)
		for i, obj := range objs {
			if current[i] {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				r := a.statusOf(ctx, obj)
				mu.Lock()
				defer mu.Unlock()
				if last[i] == nil || last[i].Status != r.Status || last[i].Message != r.Message {
					fmt.Fprintf(progress, "%s: %s: %s\n", obj.Ref(), r.Status, r.Message)
				}
				last[i] = r
				switch r.Status {
				case status.CurrentStatus:
					current[i] = true
				case status.FailedStatus:
					failed = append(failed, fmt.Errorf("%s failed: %s", obj.Ref(), r.Message))
				}
			}()
		}
		wg.Wait()
		if len(failed) > 0 {
			return errors.Join(failed...)
		}
		all := true
		for _, c := range current {
			all = all && c
		}
		if all {
			fmt.Fprintf(progress, "%d objects ready after %s\n", len(objs), time.Since(start).Round(100*time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			var errs []error
			for i, obj := range objs {
				if !current[i] && last[i] != nil {
					errs = append(errs, fmt.Errorf("timed out waiting for %s: %s: %s", obj.Ref(), last[i].Status, last[i].Message))
				}
			}
			if len(errs) == 0 {
				errs = append(errs, fmt.Errorf("waiting: %w", ctx.Err()))
			}
			return errors.Join(errs...)
		case <-time.After(interval):
		}
		// Most rollouts finish in seconds: poll fast first, then back off.
		interval = min(interval*2, 2*time.Second)
	}
}

// statusOf reads one object and computes its kstatus.
func (a *Applier) statusOf(ctx context.Context, obj *Object) *status.Result {
	gvk := obj.GroupVersionKind()
	m, ok := builtinMappings[gvk]
	if !ok {
		var err error
		if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return &status.Result{Status: status.UnknownStatus, Message: err.Error()}
		}
	}
	u, err := a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()).Get(ctx, obj.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &status.Result{Status: status.NotFoundStatus, Message: "not found"}
	}
	if err != nil {
		return &status.Result{Status: status.UnknownStatus, Message: err.Error()}
	}
	r, err := status.Compute(u)
	if err != nil {
		return &status.Result{Status: status.UnknownStatus, Message: err.Error()}
	}
	return r
}
