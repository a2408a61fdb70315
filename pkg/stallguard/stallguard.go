// Package stallguard bounds how long a Kubernetes client waits for an API
// server that accepts connections but never answers.
//
// client-go's transport has no response-header timeout, and kubectl's only
// bound is --request-timeout, which limits whole requests (0, no limit, by
// default): set for a job it would also cut `get -w`, `logs -f`, `wait` and
// `rollout status`, whose responses stream for as long as they run. So
// ferry's kubectl (its own verbs, apply, and kubectl's own command code
// alike) gets Guard's limit on the time to the response's headers, by
// default: a stalled server is an error after ResponseTimeout, while a
// response that has started may stream for as long as it needs.
package stallguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// ResponseTimeout is ferry's default limit on the time from sending a
// request to the API server to receiving its response headers (connecting
// and the TLS handshake included). Every kubectl verb of ferry, apply
// included, gets it through Guard; --request-timeout replaces it.
const ResponseTimeout = 30 * time.Second

// EnvVar names the job variable that sets the limit for a job's kubectl: a
// Go duration ("2m"), 0 for none.
const EnvVar = "FERRY_KUBECTL_TIMEOUT"

// FromEnv is the limit EnvVar sets, else ResponseTimeout; an invalid value
// is an error naming the variable.
func FromEnv() (time.Duration, error) {
	v, ok := os.LookupEnv(EnvVar)
	if !ok || v == "" {
		return ResponseTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: want a duration such as 30s or 2m (0: no limit)", EnvVar, v)
	}
	return d, nil
}

// Guard makes cfg give up on a server that does not answer within d
// (FromEnv's limit when d is 0; an invalid EnvVar counts as unset: callers
// check FromEnv first to report it). It does nothing when cfg already has a
// per-request Timeout (kubectl's --request-timeout), which then bounds each
// request as kubectl does. It keeps cfg's own transport wrappers. The limit
// runs from the start of each round trip, so it covers connecting (client-go
// allows 30 s) and the TLS handshake (10 s) as well.
func Guard(cfg *rest.Config, d time.Duration) *rest.Config {
	if cfg == nil || cfg.Timeout > 0 {
		return cfg
	}
	if d <= 0 {
		var err error
		switch d, err = FromEnv(); {
		case err != nil:
			d = ResponseTimeout
		case d == 0:
			return cfg // FERRY_KUBECTL_TIMEOUT=0: no limit
		}
	}
	host := cfg.Host
	cfg.WrapTransport = transport.Wrappers(cfg.WrapTransport, func(rt http.RoundTripper) http.RoundTripper {
		return &roundTripper{next: rt, timeout: d, host: host}
	})
	return cfg
}

// Error is returned for a request the server did not answer in time.
type Error struct {
	Host    string
	Timeout time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("the API server %s did not answer within %s (ferry's limit for a response to start; --request-timeout=DURATION sets another)", e.Host, e.Timeout)
}

type roundTripper struct {
	next    http.RoundTripper
	timeout time.Duration
	host    string
}

// WrappedRoundTripper lets client-go find the transport below (for
// connection reuse and debugging wrappers).
func (rt *roundTripper) WrappedRoundTripper() http.RoundTripper { return rt.next }

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	stalled := &Error{Host: rt.host, Timeout: rt.timeout}
	timer := time.AfterFunc(rt.timeout, func() { cancel(stalled) })
	resp, err := rt.next.RoundTrip(req.WithContext(ctx))
	if !timer.Stop() {
		// The limit passed: whatever the transport says, it is because of it.
		if err == nil {
			resp.Body.Close()
		}
		cancel(nil)
		return nil, stalled
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// exec, attach, port-forward: the connection now belongs to the
		// caller and lives as long as the session; the request's context
		// must not end it. The timer is stopped; ctx ends with req's.
		return resp, nil
	}
	// The body (a watch, logs -f) streams as long as the caller reads it:
	// the request's context ends when it is closed.
	resp.Body = &body{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type body struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *body) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// IsStall reports whether err comes from a server that did not answer.
func IsStall(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
