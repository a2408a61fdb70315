package apply

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// builtinMappings are the REST mappings of the built-in kinds deploy
// manifests are made of, at the GA versions every supported API server
// serves (Kubernetes 1.23 and later). A job's apply of such objects needs
// no discovery at all: reading the host's discovery cache (a file per API
// group) costs a fresh process more than the apply's own requests. A
// kind at another version, or any other kind, is mapped through discovery
// as before; a 404 for a path mapped here (an API server that does not
// serve it) falls back to discovery too (applyOne).
var builtinMappings = func() map[schema.GroupVersionKind]*meta.RESTMapping {
	type b struct {
		group, version, kind, resource string
		cluster                        bool
	}
	m := map[schema.GroupVersionKind]*meta.RESTMapping{}
	for _, x := range []b{
		{"", "v1", "Namespace", "namespaces", true},
		{"", "v1", "ConfigMap", "configmaps", false},
		{"", "v1", "Secret", "secrets", false},
		{"", "v1", "Service", "services", false},
		{"", "v1", "ServiceAccount", "serviceaccounts", false},
		{"", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", false},
		{"", "v1", "PersistentVolume", "persistentvolumes", true},
		{"", "v1", "Pod", "pods", false},
		{"", "v1", "LimitRange", "limitranges", false},
		{"", "v1", "ResourceQuota", "resourcequotas", false},
		{"apps", "v1", "Deployment", "deployments", false},
		{"apps", "v1", "StatefulSet", "statefulsets", false},
		{"apps", "v1", "DaemonSet", "daemonsets", false},
		{"apps", "v1", "ReplicaSet", "replicasets", false},
		{"batch", "v1", "Job", "jobs", false},
		{"batch", "v1", "CronJob", "cronjobs", false},
		{"networking.k8s.io", "v1", "Ingress", "ingresses", false},
		{"networking.k8s.io", "v1", "IngressClass", "ingressclasses", true},
		{"networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", false},
		{"rbac.authorization.k8s.io", "v1", "Role", "roles", false},
		{"rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", false},
		{"rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", true},
		{"rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", true},
		{"policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", false},
		{"autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", false},
		{"storage.k8s.io", "v1", "StorageClass", "storageclasses", true},
		{"scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", true},
		{"apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", true},
	} {
		gvk := schema.GroupVersionKind{Group: x.group, Version: x.version, Kind: x.kind}
		scope := meta.RESTScopeNamespace
		if x.cluster {
			scope = meta.RESTScopeRoot
		}
		m[gvk] = &meta.RESTMapping{Resource: gvk.GroupVersion().WithResource(x.resource), GroupVersionKind: gvk, Scope: scope}
	}
	return m
}()
