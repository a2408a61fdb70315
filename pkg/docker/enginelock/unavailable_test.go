package enginelock

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestUnavailableArchitecture: an engine the lease program cannot run on
// (here an arm64 one; the harness's dockerd is x86-64, so its answers are
// played by a server) gets one warning line and no lock: Acquire returns
// nil and the deploy goes on, and nothing is loaded.
func TestUnavailableArchitecture(t *testing.T) {
	var loads int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/containers/json":
			w.Write([]byte("[]"))
		case r.URL.Path == "/containers/create":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"No such image: ferry-lock-lease:x"}`))
		case r.URL.Path == "/info":
			json.NewEncoder(w).Encode(map[string]string{"Architecture": "aarch64", "OSType": "linux"})
		case r.URL.Path == "/images/load":
			loads++
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{Proxy: func(*http.Request) (*url.URL, error) { return url.Parse(srv.URL) }}}
	var n notes
	l := &Locker{Client: c, TTL: 6 * time.Second, Holder: "A", Deadline: time.Now().Add(time.Minute), Log: &strings.Builder{}, Notice: n.add}
	for range 2 {
		if err := l.Acquire(context.Background(), Target{Kind: "stack", Name: "s"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.all(); got != "ferry: warning: deploy lock unavailable on this engine: the engine is linux/aarch64, the lock's lease program is linux/x86_64 only; deploys to it are not serialised" {
		t.Fatalf("notices: %q", got)
	}
	if loads != 0 {
		t.Fatalf("%d image loads", loads)
	}
}
