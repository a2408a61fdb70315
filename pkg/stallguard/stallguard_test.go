package stallguard

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// stalledListener accepts connections and never answers, like an API
// server stuck behind a load balancer.
func stalledListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never read or written
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

func TestStalledServerFailsInBoundedTime(t *testing.T) {
	addr := stalledListener(t)
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			cfg := Guard(&rest.Config{Host: scheme + "://" + addr, TLSClientConfig: rest.TLSClientConfig{Insecure: scheme == "https"}}, 300*time.Millisecond)
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err = cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
			took := time.Since(start)
			if err == nil || !IsStall(err) {
				t.Fatalf("err = %v, want a stall error", err)
			}
			if !strings.Contains(err.Error(), "did not answer within 300ms") || !strings.Contains(err.Error(), addr) {
				t.Errorf("error does not say what happened: %v", err)
			}
			if took > 5*time.Second {
				t.Errorf("took %s for a 300ms limit", took)
			}
		})
	}
}

// A response whose headers came in time streams for as long as it needs
// (watch, logs -f): the limit is not a whole-request timeout.
func TestStartedResponseIsNotCut(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for i := 0; i < 5; i++ {
			time.Sleep(150 * time.Millisecond)
			io.WriteString(w, "x")
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	cfg := Guard(&rest.Config{Host: srv.URL}, 200*time.Millisecond)
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "xxxxx" {
		t.Fatalf("body %q, err %v: the stream was cut after its headers", b, err)
	}
}

// --request-timeout (rest.Config.Timeout) is kubectl's own bound: Guard
// leaves such a config alone.
func TestRequestTimeoutWins(t *testing.T) {
	cfg := &rest.Config{Host: "http://x", Timeout: time.Minute}
	if Guard(cfg, 0).WrapTransport != nil {
		t.Error("Guard wrapped a config with --request-timeout")
	}
	if Guard(&rest.Config{Host: "http://x"}, 0).WrapTransport == nil {
		t.Error("Guard did not wrap a config without a timeout")
	}
}

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want time.Duration
		err  bool
	}{{"", ResponseTimeout, false}, {"2m", 2 * time.Minute, false}, {"0", 0, false}, {"soon", 0, true}, {"-1s", 0, true}} {
		t.Setenv(EnvVar, tc.v)
		d, err := FromEnv()
		if d != tc.want || (err != nil) != tc.err {
			t.Errorf("%s=%q: %v, %v", EnvVar, tc.v, d, err)
		}
	}
	t.Setenv(EnvVar, "0")
	if Guard(&rest.Config{Host: "http://x"}, 0).WrapTransport != nil {
		t.Error("FERRY_KUBECTL_TIMEOUT=0 still limits")
	}
	t.Setenv(EnvVar, "soon")
	if Guard(&rest.Config{Host: "http://x"}, 0).WrapTransport == nil {
		t.Error("an invalid FERRY_KUBECTL_TIMEOUT removed the limit")
	}
}
