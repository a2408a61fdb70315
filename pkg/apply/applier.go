package apply

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/disk"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Options configures an Applier (shared by every call on it).
type Options struct {
	// DiscoveryCacheDir is the host-wide discovery cache root,
	// "<FERRY_STATE_DIR>/cache/discovery"; each API server gets a 0700
	// directory "<DiscoveryCacheDir>/<host_port>". Empty: in-memory only.
	DiscoveryCacheDir string
	// DiscoveryCacheTTL is how long cached discovery is trusted (default 6h,
	// as kubectl); a kind missing from the cache refreshes it once anyway.
	DiscoveryCacheTTL time.Duration
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
	cfg       *rest.Config
	opts      Options
	rest      *rest.RESTClient
	dyn       dynamic.Interface
	meta      metadata.Interface
	discovery discovery.CachedDiscoveryInterface
	mapper    *restmapper.DeferredDiscoveryRESTMapper
}

// NewApplier builds the clients for cfg. It makes no request: discovery is
// fetched (or read from the disk cache) on the first mapping.
func NewApplier(cfg *rest.Config, opts Options) (*Applier, error) {
	if opts.DiscoveryCacheTTL == 0 {
		opts.DiscoveryCacheTTL = 6 * time.Hour
	}
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
	if opts.DiscoveryCacheDir != "" {
		dir, httpDir, err := cacheDirs(opts.DiscoveryCacheDir, cfg.Host)
		if err != nil {
			return nil, err
		}
		if a.discovery, err = disk.NewCachedDiscoveryClientForConfig(cfg, dir, httpDir, opts.DiscoveryCacheTTL); err != nil {
			return nil, fmt.Errorf("discovery client: %w", err)
		}
	} else {
		dc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, hc)
		if err != nil {
			return nil, fmt.Errorf("discovery client: %w", err)
		}
		a.discovery = memory.NewMemCacheClient(dc)
	}
	// The deferred mapper reads discovery on first use and, on a kind it
	// does not know, invalidates a cache that was not fetched in this
	// process and retries once: a stale host cache costs one refresh.
	a.mapper = restmapper.NewDeferredDiscoveryRESTMapper(a.discovery)
	return a, nil
}

// Discovery is the applier's (cached) discovery client, for the CLI's short
// names (svc, deploy) and server version.
func (a *Applier) Discovery() discovery.CachedDiscoveryInterface { return a.discovery }

// Mapper is the applier's RESTMapper (for the CLI's get/delete by name).
func (a *Applier) Mapper() meta.RESTMapper { return a.mapper }

// ResetMapper forgets cached discovery (after installing CRDs).
func (a *Applier) ResetMapper() { a.mapper.Reset() }

// Dynamic is the applier's dynamic client.
func (a *Applier) Dynamic() dynamic.Interface { return a.dyn }

// HTTPClient is for callers that need more requests on the same connection.
func (a *Applier) HTTPClient() (*http.Client, error) { return rest.HTTPClientFor(a.cfg) }

var unsafeHostChars = regexp.MustCompile(`[^(\w/.)]`)

// cacheDirs makes "<root>/<host>" for discovery and "<root>/../http/<host>"
// for client-go's HTTP cache, private (0700) because they live on a shared
// host; client-go creates what is below them 0750/0660.
func cacheDirs(root, host string) (string, string, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
	h = strings.ReplaceAll(unsafeHostChars.ReplaceAllString(h, "_"), "/", "_")
	dir := filepath.Join(root, h)
	httpDir := filepath.Join(filepath.Dir(root), "http", h)
	for _, d := range []string{filepath.Dir(root), root, dir, filepath.Dir(httpDir), httpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", "", fmt.Errorf("discovery cache: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("discovery cache: %w", err)
	}
	return dir, httpDir, nil
}
