// Package deploylock is the deploy lock's engine half (docs/deploy-safety.md):
// one deploy at a time per target (the job's environment in a namespace, or
// the namespace), held in the cluster as a coordination.k8s.io Lease, with a
// first come, first served queue of waiting jobs kept in the same object
// (optimistic concurrency on its resourceVersion) and a watch for fast
// handoff. The per-job holder process (Main) takes it for the job's kubectl,
// renews it while the job runs, and releases it at cleanup, when the runner
// dies, or at the job's deadline. A holder that vanishes loses it once its
// lease expires; a waiter that vanishes drops out of the queue the same way.
package deploylock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// Annotations of the Lease: who holds it (for the waiting line) and who
// waits, in order.
const (
	HolderAnnotation = "ferry.gitlab.io/lock-holder"
	QueueAnnotation  = "ferry.gitlab.io/lock-queue"
	TargetAnnotation = "ferry.gitlab.io/lock-target"
	// LeasePrefix starts the name of every lock Lease.
	LeasePrefix = "ferry-deploy-lock"
)

// Who is a job as the lock records it.
type Who struct {
	ID       string    `json:"id"` // unique per job (and holder start)
	Project  string    `json:"project,omitempty"`
	Pipeline string    `json:"pipeline,omitempty"`
	Job      string    `json:"job,omitempty"`
	Since    time.Time `json:"since"`
	// Seen is the waiter's last heartbeat (queue entries only): an entry
	// not refreshed for a lease duration belongs to a vanished job.
	Seen time.Time `json:"seen,omitempty"`
}

func (w Who) String() string {
	s := w.Project
	if s == "" {
		s = "a job"
	}
	if w.Pipeline != "" {
		s += " pipeline " + w.Pipeline
	}
	if w.Job != "" {
		s += " job " + w.Job
	}
	return s
}

// LeaseName is the Lease of a target: the environment's name (lower case,
// what a name may hold, and a hash so that two environments never share
// one), or the namespace's own lock when env is "".
func LeaseName(env string) string {
	if env == "" {
		return LeasePrefix
	}
	sum := sha256.Sum256([]byte(env))
	clean := strings.Trim(nameJunk.ReplaceAllString(strings.ToLower(env), "-"), "-")
	if len(clean) > 40 {
		clean = strings.Trim(clean[:40], "-")
	}
	if clean == "" {
		return LeasePrefix + "-" + hex.EncodeToString(sum[:5])
	}
	return LeasePrefix + "-" + clean + "-" + hex.EncodeToString(sum[:5])
}

var nameJunk = regexp.MustCompile(`[^a-z0-9.-]+`)

// Target is one lock: a Lease in a namespace.
type Target struct {
	Namespace, Name string
	Env             string // for lines only
}

func (t Target) String() string {
	if t.Env != "" {
		return fmt.Sprintf("environment %q in namespace %s", t.Env, t.Namespace)
	}
	return "namespace " + t.Namespace
}

// Lock takes and keeps Leases for one job.
type Lock struct {
	Client   kubernetes.Interface
	Me       Who
	Duration time.Duration // lease duration; renewed every third of it

	mu sync.Mutex
	// last is, per held Lease, the resourceVersion of this job's last
	// write when that write left nobody queued: Release then deletes it in
	// one request, on that version (a waiter that queued since changed it,
	// and Release takes the long way).
	last map[Target]string
}

func (k *Lock) wrote(t Target, l *coordinationv1.Lease, queued int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.last == nil {
		k.last = map[Target]string{}
	}
	if l == nil || queued > 0 {
		delete(k.last, t)
		return
	}
	k.last[t] = l.ResourceVersion
}

type state struct {
	lease  *coordinationv1.Lease
	holder *Who
	queue  []Who
}

func decode(l *coordinationv1.Lease) state {
	s := state{lease: l}
	if v := l.Annotations[HolderAnnotation]; v != "" {
		var w Who
		if json.Unmarshal([]byte(v), &w) == nil {
			s.holder = &w
		}
	}
	if v := l.Annotations[QueueAnnotation]; v != "" {
		_ = json.Unmarshal([]byte(v), &s.queue)
	}
	return s
}

// encode writes holder and queue back into the lease.
func (s *state) encode() {
	if s.lease.Annotations == nil {
		s.lease.Annotations = map[string]string{}
	}
	if s.holder != nil {
		b, _ := json.Marshal(s.holder)
		s.lease.Annotations[HolderAnnotation] = string(b)
	} else {
		delete(s.lease.Annotations, HolderAnnotation)
	}
	if len(s.queue) > 0 {
		b, _ := json.Marshal(s.queue)
		s.lease.Annotations[QueueAnnotation] = string(b)
	} else {
		delete(s.lease.Annotations, QueueAnnotation)
	}
}

func holderID(l *coordinationv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// expired: the holder did not renew within its lease duration.
func expired(l *coordinationv1.Lease, now time.Time) bool {
	if holderID(l) == "" {
		return true
	}
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return true
	}
	return now.After(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

func (s *state) position(id string) int {
	for i, w := range s.queue {
		if w.ID == id {
			return i
		}
	}
	return -1
}

// prune drops queue entries whose job stopped refreshing them.
func (s *state) prune(now time.Time, d time.Duration, me string) bool {
	kept := s.queue[:0:0]
	for _, w := range s.queue {
		if w.ID == me || now.Sub(w.Seen) <= d {
			kept = append(kept, w)
		}
	}
	changed := len(kept) != len(s.queue)
	s.queue = kept
	return changed
}

func (k *Lock) durationSeconds() *int32 {
	s := int32((k.Duration + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return &s
}

// errConflict: someone else changed the lease between our read and write.
var errConflict = errors.New("conflict")

// Acquire returns once this job holds t, or with the one-line error
// (permission, ctx ended). wait gets one line the first time the job must
// wait, naming the holder and how many wait before it.
func (k *Lock) Acquire(ctx context.Context, t Target, wait func(string)) (err error) {
	leases := k.Client.CoordinationV1().Leases(t.Namespace)
	printed := false
	queued := false
	defer func() {
		if err != nil && queued {
			// Cancelled or failed while waiting: leave no queue entry.
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = k.leave(cctx, t)
		}
	}()
	// A free target has no Lease: try to create it first (one round trip
	// on the common path), and read it only when it exists.
	tryCreate := true
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now()
		var l *coordinationv1.Lease
		var err error = apierrors.NewNotFound(coordinationv1.Resource("leases"), t.Name)
		if !tryCreate {
			l, err = leases.Get(ctx, t.Name, metav1.GetOptions{})
		}
		tryCreate = false
		if apierrors.IsNotFound(err) {
			me := k.Me
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: t.Namespace,
				Annotations: map[string]string{TargetAnnotation: t.Env}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &me.ID, LeaseDurationSeconds: k.durationSeconds(),
					AcquireTime: &metav1.MicroTime{Time: now}, RenewTime: &metav1.MicroTime{Time: now}}}
			s := state{lease: l, holder: &me}
			s.encode()
			created, err := leases.Create(ctx, l, metav1.CreateOptions{})
			if err == nil {
				k.wrote(t, created, 0)
				return nil
			}
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return k.apiError(err, t, "create")
		}
		if err != nil {
			return k.apiError(err, t, "get")
		}
		s := decode(l)
		if holderID(l) == k.Me.ID {
			return nil
		}
		changed := s.prune(now, k.Duration, k.Me.ID)
		pos := s.position(k.Me.ID)
		if expired(l, now) && (pos == 0 || (pos < 0 && len(s.queue) == 0)) {
			// Free (released or its holder vanished) and this job is next.
			if pos == 0 {
				s.queue = s.queue[1:]
			}
			me := k.Me
			s.holder = &me
			s.encode()
			l.Spec.HolderIdentity = &me.ID
			l.Spec.LeaseDurationSeconds = k.durationSeconds()
			l.Spec.AcquireTime = &metav1.MicroTime{Time: now}
			l.Spec.RenewTime = &metav1.MicroTime{Time: now}
			tr := int32(0)
			if l.Spec.LeaseTransitions != nil {
				tr = *l.Spec.LeaseTransitions
			}
			tr++
			l.Spec.LeaseTransitions = &tr
			taken, err := leases.Update(ctx, l, metav1.UpdateOptions{})
			if err != nil {
				if apierrors.IsConflict(err) {
					continue
				}
				return k.apiError(err, t, "update")
			}
			k.wrote(t, taken, len(s.queue))
			return nil
		}
		if pos < 0 {
			me := k.Me
			me.Since, me.Seen = now, now
			s.queue = append(s.queue, me)
			pos = len(s.queue) - 1
			changed = true
		} else if now.Sub(s.queue[pos].Seen) > k.Duration/3 {
			s.queue[pos].Seen = now
			changed = true
		}
		if changed {
			s.encode()
			nl, err := leases.Update(ctx, l, metav1.UpdateOptions{})
			if err != nil {
				if apierrors.IsConflict(err) {
					continue
				}
				return k.apiError(err, t, "update")
			}
			queued = true
			l = nl
		}
		if !printed {
			printed = true
			h := "a job that has vanished (its lease runs out)"
			since := ""
			if s.holder != nil && !expired(l, now) {
				h = s.holder.String()
				since = " since " + s.holder.Since.UTC().Format("15:04:05")
			}
			wait(fmt.Sprintf("ferry: deploy lock: %s is held by %s%s; %d job(s) wait before this one; waiting (up to the job's timeout)",
				t, h, since, pos))
		}
		if err := k.waitChange(ctx, t, l); err != nil {
			return err
		}
	}
}

// waitChange returns when the lease changes (watch), when its holder's
// lease would run out, or after a third of a lease duration (this job's
// queue heartbeat), whichever comes first.
func (k *Lock) waitChange(ctx context.Context, t Target, l *coordinationv1.Lease) error {
	d := k.Duration / 3
	if holderID(l) != "" && l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil {
		until := time.Until(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second)) + 50*time.Millisecond
		if until < d {
			d = until
		}
	}
	if d < 10*time.Millisecond {
		d = 10 * time.Millisecond
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	w, err := k.Client.CoordinationV1().Leases(t.Namespace).Watch(wctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", t.Name).String(), ResourceVersion: l.ResourceVersion})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wctx.Err() != nil {
			return nil
		}
		if apierrors.IsForbidden(err) {
			return k.apiError(err, t, "watch")
		}
		// A watch that cannot start (expired version): read again.
		return nil
	}
	defer w.Stop()
	select {
	case <-w.ResultChan():
	case <-wctx.Done():
	}
	return ctx.Err()
}

// Renew extends this job's lease on t. lost reports that another job holds
// it now (this job's holder was gone longer than a lease).
func (k *Lock) Renew(ctx context.Context, t Target) (lost bool, err error) {
	leases := k.Client.CoordinationV1().Leases(t.Namespace)
	for i := 0; i < 5; i++ {
		l, err := leases.Get(ctx, t.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if holderID(l) != k.Me.ID {
			return true, nil
		}
		now := metav1.MicroTime{Time: time.Now()}
		l.Spec.RenewTime = &now
		renewed, err := leases.Update(ctx, l, metav1.UpdateOptions{})
		if err != nil {
			if apierrors.IsConflict(err) {
				continue
			}
			return false, err
		}
		k.wrote(t, renewed, len(decode(renewed).queue))
		return false, nil
	}
	return false, errConflict
}

// Release gives t up: the next waiter takes it; with nobody waiting the
// Lease is deleted, so a free target leaves nothing behind.
func (k *Lock) Release(ctx context.Context, t Target) error {
	k.mu.Lock()
	rv, ok := k.last[t]
	delete(k.last, t)
	k.mu.Unlock()
	if ok {
		// Nobody queued at this job's last write: delete on that version,
		// one request; anything else (a waiter queued) takes the long way.
		err := k.Client.CoordinationV1().Leases(t.Namespace).Delete(ctx, t.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
	}
	return k.update(ctx, t, func(s *state) bool {
		if holderID(s.lease) != k.Me.ID {
			return false
		}
		s.holder = nil
		s.lease.Spec.HolderIdentity = nil
		s.lease.Spec.AcquireTime = nil
		s.lease.Spec.RenewTime = nil
		return true
	})
}

// leave drops this job from t's queue.
func (k *Lock) leave(ctx context.Context, t Target) error {
	return k.update(ctx, t, func(s *state) bool {
		i := s.position(k.Me.ID)
		if i < 0 {
			return false
		}
		s.queue = append(s.queue[:i], s.queue[i+1:]...)
		return true
	})
}

// update applies change to t's lease (retrying on conflicts) and deletes
// the lease when it is left with no holder and no queue.
func (k *Lock) update(ctx context.Context, t Target, change func(*state) bool) error {
	leases := k.Client.CoordinationV1().Leases(t.Namespace)
	for i := 0; i < 10; i++ {
		l, err := leases.Get(ctx, t.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		s := decode(l)
		if !change(&s) {
			return nil
		}
		s.prune(time.Now(), k.Duration, "")
		if holderID(l) == "" && len(s.queue) == 0 {
			rv := l.ResourceVersion
			err = leases.Delete(ctx, t.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
			if err == nil || apierrors.IsNotFound(err) {
				return nil
			}
		} else {
			s.encode()
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
			if err == nil {
				return nil
			}
		}
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return errConflict
}

// apiError turns an API error into the job log's one line; Forbidden names
// the Role and RoleBinding the namespace's admin must add.
func (k *Lock) apiError(err error, t Target, verb string) error {
	if apierrors.IsForbidden(err) {
		subject := "--serviceaccount=<namespace>:<the job's ServiceAccount>"
		if m := forbiddenUser.FindStringSubmatch(err.Error()); m != nil {
			if sa, ok := strings.CutPrefix(m[1], "system:serviceaccount:"); ok {
				subject = "--serviceaccount=" + sa
			} else {
				subject = "--user=" + m[1]
			}
		}
		return fmt.Errorf("ferry: deploy lock: the job's credentials may not %s leases.coordination.k8s.io in namespace %s; "+
			"the namespace's admin must add: kubectl -n %s create role ferry-deploy-lock --verb=get,list,watch,create,update,delete --resource=leases.coordination.k8s.io "+
			"&& kubectl -n %s create rolebinding ferry-deploy-lock --role=ferry-deploy-lock %s (or the runner's admin turns the lock off: --deploy-lock=false)",
			verb, t.Namespace, t.Namespace, t.Namespace, subject)
	}
	return fmt.Errorf("ferry: deploy lock: %s: %s lease %s: %v", t, verb, t.Name, err)
}

var forbiddenUser = regexp.MustCompile(`User "([^"]+)" cannot`)
