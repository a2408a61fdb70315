package apply

import (
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Stages, applied in this order; each waits for the one before.
const (
	// stagePrereq: CRDs, Namespaces and cluster-scoped kinds others depend
	// on (ClusterRoles, ClusterRoleBindings, ...). CRDs are then waited for
	// (Established) and the REST mapper is reset.
	stagePrereq = iota
	// stageClass: *Class kinds (StorageClass, IngressClass, PriorityClass,
	// ...), referenced by name from objects of the last stage.
	stageClass
	// stageRest: everything else, including custom resources whose CRD was
	// in stagePrereq.
	stageRest
	numStages
)

var (
	crdGK       = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}
	namespaceGK = schema.GroupKind{Kind: "Namespace"}
)

// lateClusterKinds are cluster-scoped yet must not go first: a webhook
// configuration or an APIService applied before the Service and Deployment
// backing it would make the API server reject or fail the rest of the apply.
var lateClusterKinds = map[schema.GroupKind]bool{
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}:   true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}:     true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}:        true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}: true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicy"}:          true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicyBinding"}:   true,
	{Group: "apiregistration.k8s.io", Kind: "APIService"}:                             true,
	{Group: "certificates.k8s.io", Kind: "CertificateSigningRequest"}:                 true,
	{Group: "storage.k8s.io", Kind: "VolumeAttachment"}:                               true,
	{Group: "networking.k8s.io", Kind: "IPAddress"}:                                   true,
	{Group: "networking.k8s.io", Kind: "ServiceCIDR"}:                                 true,
}

// stageOf says in which stage an object goes. mapping is nil when its kind
// is not (yet) known to the API server: such objects go last, after CRDs.
func stageOf(gk schema.GroupKind, mapping *meta.RESTMapping) int {
	switch {
	case gk == crdGK, gk == namespaceGK:
		return stagePrereq
	case strings.HasSuffix(gk.Kind, "Class"):
		return stageClass
	case mapping != nil && mapping.Scope.Name() == meta.RESTScopeNameRoot && !lateClusterKinds[gk]:
		return stagePrereq
	default:
		return stageRest
	}
}
