package kubecreds

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/failure"
)

// credsFor points the sa-token kubeconfig at srv, trusting srv's
// certificate when trust is set (and the unrelated test CA otherwise).
func credsFor(t *testing.T, srv *httptest.Server, trust bool) *Creds {
	t.Helper()
	c, err := load(t, map[string]string{"KUBECONFIG": readKubeconfig(t, "sa-token.yaml")}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Config.Clusters["example"]
	cl.Server = srv.URL
	if trust {
		cl.CertificateAuthorityData = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
		cl.TLSServerName = "example.com" // httptest's certificate names example.com
	}
	return c
}

func status(code int, reason string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"` + reason + `","message":"` + reason + ` by test","code":` + strconv.Itoa(code) + `}`))
	}
}

func TestPreflightClassification(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		trust   bool
		build   bool
		want    string
	}{
		{"wrong CA", status(200, ""), false, true, "TLS"},
		{"401", status(401, "Unauthorized"), true, true, "rejected the credentials (401 Unauthorized)"},
		{"403", status(403, "Forbidden"), true, true, "403 Forbidden"},
		{"500", status(500, "InternalError"), true, false, "failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(c.handler)
			defer srv.Close()
			_, err := Preflight(context.Background(), credsFor(t, srv, c.trust), 3*time.Second)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "ferry: KUBECONFIG: ") {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if failure.IsBuild(err) != c.build {
				t.Fatalf("%v: build failure = %v, want %v", err, !c.build, c.build)
			}
			if strings.Contains(err.Error(), saToken) {
				t.Fatal("token in error")
			}
		})
	}
}

func TestParseSources(t *testing.T) {
	for in, want := range map[string][]string{
		"kubeconfig,cluster-vars": {"kubeconfig", "cluster-vars"},
		" cluster-vars ":          {"cluster-vars"},
		"":                        {"none"},
		"none":                    {"none"},
	} {
		got, err := ParseSources(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := ParseSources("kubeconfig,vault"); err == nil || !strings.Contains(err.Error(), `"vault"`) {
		t.Errorf("unknown source: %v", err)
	}
}
