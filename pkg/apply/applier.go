package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// Discovery maps kinds to resources through the API server's discovery:
// custom resources, other versions, short names (the built-in kinds deploy
// manifests are made of need none, builtinMappings). Reset forgets what
// was discovered (after new CRDs). The engine's is client-go's cached
// discovery (pkg/kubediscovery); the job's small kubectl (executor/kubectl)
// has none: client-go's discovery package registers every built-in API
// type at process start, which alone costs a fresh process about as much
// as the seed apply's own requests.
type Discovery = meta.ResettableRESTMapper

// NewDiscovery builds the Discovery of one applier, on its configuration
// and HTTP client.
type NewDiscovery func(cfg *rest.Config, hc *http.Client) (Discovery, error)

// ErrNoDiscovery is returned for a kind only discovery could map, by an
// applier built without it.
var ErrNoDiscovery = errors.New("this kubectl maps only built-in kinds (it has no discovery client)")

// Options configures an Applier (shared by every call on it).
type Options struct {
	// Discovery builds the mapper for kinds builtinMappings does not
	// know. Nil: built-in kinds only (Mappable tells), ErrNoDiscovery for
	// the rest.
	Discovery NewDiscovery
	// QPS and Burst of the client (defaults 500 and 1000): client-go's own
	// defaults (5/10) throttle a many-object apply.
	QPS   float32
	Burst int
	// Concurrency is how many objects of one stage are in flight (default 8).
	Concurrency int
}

// Applier applies, diffs, waits for and deletes objects on one cluster.
// It is safe for concurrent use.
type Applier struct {
	cfg    *rest.Config
	opts   Options
	rest   *rest.RESTClient
	dyn    dynamic.Interface
	meta   metadata.Interface
	mapper Discovery
}

// NewApplier builds the clients for cfg. It makes no request: discovery is
// fetched (or read from its disk cache) on the first mapping that needs it.
func NewApplier(cfg *rest.Config, opts Options) (*Applier, error) {
	if opts.QPS == 0 {
		opts.QPS = 500
	}
	if opts.Burst == 0 {
		opts.Burst = 1000
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = opts.QPS, opts.Burst
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	a := &Applier{cfg: cfg, opts: opts}
	// A raw REST client for the apply PATCH: the dynamic client hides the
	// HTTP status, and 201 vs 200 is how ferry knows "created" for free.
	rc := dynamic.ConfigFor(cfg)
	rc.GroupVersion = nil
	if a.rest, err = rest.UnversionedRESTClientForConfigAndClient(rc, hc); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if a.dyn, err = dynamic.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if a.meta, err = metadata.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	a.mapper = noDiscovery{}
	if opts.Discovery != nil {
		if a.mapper, err = opts.Discovery(cfg, hc); err != nil {
			return nil, fmt.Errorf("discovery client: %w", err)
		}
	}
	return a, nil
}

// noDiscovery is the mapper of an applier without discovery.
type noDiscovery struct{}

func (noDiscovery) Reset() {}

func (noDiscovery) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	return nil, fmt.Errorf("resource mapping not found for kind %q in %q: %w", gk.Kind, gk.Group, ErrNoDiscovery)
}

func (noDiscovery) RESTMappings(gk schema.GroupKind, versions ...string) ([]*meta.RESTMapping, error) {
	_, err := noDiscovery{}.RESTMapping(gk)
	return nil, err
}

func (noDiscovery) KindFor(r schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	return schema.GroupVersionKind{}, fmt.Errorf("resource %q: %w", r.Resource, ErrNoDiscovery)
}

func (noDiscovery) KindsFor(r schema.GroupVersionResource) ([]schema.GroupVersionKind, error) {
	return nil, fmt.Errorf("resource %q: %w", r.Resource, ErrNoDiscovery)
}

func (noDiscovery) ResourceFor(r schema.GroupVersionResource) (schema.GroupVersionResource, error) {
	return schema.GroupVersionResource{}, fmt.Errorf("resource %q: %w", r.Resource, ErrNoDiscovery)
}

func (noDiscovery) ResourcesFor(r schema.GroupVersionResource) ([]schema.GroupVersionResource, error) {
	return nil, fmt.Errorf("resource %q: %w", r.Resource, ErrNoDiscovery)
}

func (noDiscovery) ResourceSingularizer(resource string) (string, error) {
	return "", fmt.Errorf("resource %q: %w", resource, ErrNoDiscovery)
}

// Mappable reports whether every object is of a kind this applier maps
// without discovery, or the applier has discovery: a caller without it
// hands the objects to a binary that has it before applying any.
func (a *Applier) Mappable(objs []*Object) bool {
	if _, none := a.mapper.(noDiscovery); !none {
		return true
	}
	for _, o := range objs {
		if _, ok := builtinMappings[o.GroupVersionKind()]; !ok {
			return false
		}
	}
	return true
}

// Mapping is the REST mapping of gvk: a built-in kind's without discovery,
// any other through it.
func (a *Applier) Mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	if m, ok := builtinMappings[gvk]; ok {
		return m, nil
	}
	return a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
}

// ServerVersion is the API server's version (GET /version), without
// discovery.
func (a *Applier) ServerVersion(ctx context.Context) (string, error) {
	body, err := a.rest.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return "", err
	}
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", fmt.Errorf("the server's /version: %w", err)
	}
	return v.GitVersion, nil
}

// Mapper is the applier's discovery RESTMapper (for the CLI's verbs that
// name a type: short names, custom resources).
func (a *Applier) Mapper() meta.RESTMapper { return a.mapper }

// ResetMapper forgets cached discovery (after installing CRDs).
func (a *Applier) ResetMapper() { a.mapper.Reset() }

// Dynamic is the applier's dynamic client.
func (a *Applier) Dynamic() dynamic.Interface { return a.dyn }
