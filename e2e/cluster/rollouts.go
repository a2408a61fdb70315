package cluster

import (
	"context"
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// simulateRollouts stands in for the workload controllers and the kubelets
// that this server does not have: every poll it finds Deployments,
// StatefulSets, DaemonSets and Jobs whose status does not yet describe their
// current spec and, once the spec has been stable for delay, writes the
// status those controllers write after a successful rollout. It polls rather
// than watches because it is simpler and 100ms of latency does not matter to
// the tests that use it.
func simulateRollouts(ctx context.Context, c kubernetes.Interface, delay time.Duration, logf func(string, ...any)) {
	// A status the server refuses would leave a test waiting for a rollout
	// that never comes, so say why. Conflicts and deletions are ordinary
	// races with the test's own writes: the next poll retries.
	report := func(kind, ns, name string, err error) {
		if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
			logf("rollout simulator: %s %s/%s: status update refused: %v", kind, ns, name, err)
		}
	}
	seen := map[string]time.Time{} // object+generation -> first seen
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// Only keys met in this poll survive it, so a long devcluster run
		// does not accumulate deleted objects and old generations.
		prev := seen
		seen = map[string]time.Time{}
		ready := func(meta metav1.ObjectMeta, kind string) bool {
			if meta.Annotations[NeverReadyAnnotation] == "true" || meta.DeletionTimestamp != nil {
				return false
			}
			key := kind + "/" + meta.Namespace + "/" + meta.Name + "@" + strconv.FormatInt(meta.Generation, 10)
			first, ok := prev[key]
			if !ok {
				first = time.Now()
			}
			seen[key] = first
			return time.Since(first) >= delay
		}
		if list, err := c.AppsV1().Deployments("").List(ctx, metav1.ListOptions{}); err == nil {
			for i := range list.Items {
				d := &list.Items[i]
				if deploymentDone(d) || !ready(d.ObjectMeta, "deploy") {
					continue
				}
				setDeploymentRolledOut(d)
				_, err := c.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
				report("Deployment", d.Namespace, d.Name, err)
			}
		}
		if list, err := c.AppsV1().StatefulSets("").List(ctx, metav1.ListOptions{}); err == nil {
			for i := range list.Items {
				s := &list.Items[i]
				if s.Status.ObservedGeneration == s.Generation && s.Status.ReadyReplicas == replicas(s.Spec.Replicas) || !ready(s.ObjectMeta, "sts") {
					continue
				}
				r := replicas(s.Spec.Replicas)
				s.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.Generation, Replicas: r, ReadyReplicas: r,
					CurrentReplicas: r, UpdatedReplicas: r, AvailableReplicas: r,
					CurrentRevision: s.Name + "-1", UpdateRevision: s.Name + "-1"}
				_, err := c.AppsV1().StatefulSets(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{})
				report("StatefulSet", s.Namespace, s.Name, err)
			}
		}
		if list, err := c.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{}); err == nil {
			for i := range list.Items {
				d := &list.Items[i]
				if d.Status.ObservedGeneration == d.Generation && d.Status.NumberAvailable == 1 || !ready(d.ObjectMeta, "ds") {
					continue
				}
				// One simulated node.
				d.Status = appsv1.DaemonSetStatus{ObservedGeneration: d.Generation, CurrentNumberScheduled: 1,
					DesiredNumberScheduled: 1, NumberReady: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}
				_, err := c.AppsV1().DaemonSets(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
				report("DaemonSet", d.Namespace, d.Name, err)
			}
		}
		if list, err := c.BatchV1().Jobs("").List(ctx, metav1.ListOptions{}); err == nil {
			for i := range list.Items {
				j := &list.Items[i]
				if j.Status.CompletionTime != nil || !ready(j.ObjectMeta, "job") {
					continue
				}
				now := metav1.Now()
				start := j.Status.StartTime
				if start == nil {
					start = &now
				}
				j.Status = batchv1.JobStatus{StartTime: start, CompletionTime: &now, Succeeded: 1,
					Conditions: []batchv1.JobCondition{
						{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
						{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
					}}
				_, err := c.BatchV1().Jobs(j.Namespace).UpdateStatus(ctx, j, metav1.UpdateOptions{})
				report("Job", j.Namespace, j.Name, err)
			}
		}
	}
}

func deploymentDone(d *appsv1.Deployment) bool {
	r := replicas(d.Spec.Replicas)
	return d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == r &&
		d.Status.AvailableReplicas == r && d.Status.ReadyReplicas == r
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// setDeploymentRolledOut writes the status the deployment controller
// reports once every replica of the current generation is available.
func setDeploymentRolledOut(d *appsv1.Deployment) {
	r := replicas(d.Spec.Replicas)
	now := metav1.Now()
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation, Replicas: r, UpdatedReplicas: r,
		ReadyReplicas: r, AvailableReplicas: r,
		Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable",
				Message: "Deployment has minimum availability.", LastUpdateTime: now, LastTransitionTime: now},
			{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable",
				Message: "ReplicaSet \"" + d.Name + "\" has successfully progressed.", LastUpdateTime: now, LastTransitionTime: now},
		},
	}
}

// MarkDeploymentAvailable reports the Deployment's current generation as
// rolled out, as the simulator would, but now and regardless of
// NeverReadyAnnotation: for tests that run without SimulateRollouts and
// decide themselves when a rollout finishes. It retries on conflicts.
func (c *Cluster) MarkDeploymentAvailable(ctx context.Context, namespace, name string) error {
	for {
		d, err := c.client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("cluster: mark deployment %s/%s available: %w", namespace, name, err)
		}
		setDeploymentRolledOut(d)
		_, err = c.client.AppsV1().Deployments(namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("cluster: mark deployment %s/%s available: %w", namespace, name, err)
		}
		return nil
	}
}
