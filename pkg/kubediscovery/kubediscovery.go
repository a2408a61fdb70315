// Package kubediscovery is the discovery half of ferry's kubectl: client-go's
// discovery client, cached on the host's disk, and the REST mapper on it
// (short names included), for the kinds pkg/apply does not map itself.
// Only the engine links it: client-go's discovery package registers every
// built-in API type in client-go's scheme at process start, which costs a
// fresh process about as much as the seed apply's own requests, so the
// job's small kubectl (executor/kubectl) goes without and hands commands
// that need discovery to the engine.
package kubediscovery

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/disk"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"gitlab.com/ferry-ci/ferry/pkg/apply"
)

// TTL is how long cached discovery is trusted, as kubectl's; a kind missing
// from the cache refreshes it once anyway.
const TTL = 6 * time.Hour

// Cached returns pkg/apply's discovery on a disk cache under dir, the
// host-wide root "<FERRY_STATE_DIR>/cache/discovery" or the job's own
// (each API server gets a 0700 directory "<dir>/<host_port>"); empty dir:
// in memory only.
func Cached(dir string) apply.NewDiscovery {
	return func(cfg *rest.Config, hc *http.Client) (apply.Discovery, error) {
		var dc discovery.CachedDiscoveryInterface
		if dir != "" {
			d, httpDir, err := cacheDirs(dir, cfg.Host)
			if err != nil {
				return nil, err
			}
			if dc, err = disk.NewCachedDiscoveryClientForConfig(cfg, d, httpDir, TTL); err != nil {
				return nil, err
			}
		} else {
			c, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, hc)
			if err != nil {
				return nil, err
			}
			dc = memory.NewMemCacheClient(c)
		}
		// The deferred mapper reads discovery on first use and, on a kind
		// it does not know, invalidates a cache that was not fetched in
		// this process and retries once: a stale host cache costs one
		// refresh. The shortcut expander adds kubectl's short names (svc,
		// deploy) for the verbs that take a type on the command line.
		m := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(dc), dc, func(string) {})
		r, ok := m.(apply.Discovery)
		if !ok {
			return nil, fmt.Errorf("client-go's shortcut expander (%T) cannot be reset", m)
		}
		return r, nil
	}
}

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
