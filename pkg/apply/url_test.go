package apply

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestReadURL serves manifests on a loopback HTTP server: -f URL reads them
// (source named by the URL), a 404 is one error naming the URL and the
// status, a 5xx is retried like kubectl.
func TestReadURL(t *testing.T) {
	var flaky atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/crds.yaml":
			w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n"))
		case "/flaky.yaml":
			if flaky.Add(1) == 1 {
				http.Error(w, "try again", http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	objs, err := ReadManifests(ReadOptions{Filenames: []string{srv.URL + "/crds.yaml", srv.URL + "/flaky.yaml"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(objs), " "); got != "ConfigMap/a ConfigMap/b ConfigMap/c" {
		t.Fatalf("objects = %q", got)
	}
	if objs[1].Location() != srv.URL+"/crds.yaml:6" {
		t.Fatalf("location = %q", objs[1].Location())
	}
	if flaky.Load() != 2 {
		t.Fatalf("flaky.yaml fetched %d times, want 2 (one retry after 503)", flaky.Load())
	}

	_, err = ReadManifests(ReadOptions{Filenames: []string{srv.URL + "/missing.yaml"}})
	want := `unable to read URL "` + srv.URL + `/missing.yaml", server reported 404 Not Found, status code=404`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}
