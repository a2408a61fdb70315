package holder

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// proxy is the Docker API, passed through to the remote engine over the
// endpoint's SSH connection (one dial-stdio session per upstream
// connection, kept alive between requests), with ferry's guards.
func (h *holder) proxy(lc *lazyClient) http.Handler {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return lc.dial(context.WithoutCancel(ctx))
		},
		MaxIdleConns:        32,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return h.guardDeploys(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "docker"
			pr.Out.Host = pr.In.Host
			if msgs := h.inspect(pr.Out); len(msgs) > 0 {
				pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), guardKey{}, msgs))
			}
		},
		Transport:     tr,
		FlushInterval: -1, // pulls, logs and events stream
		ModifyResponse: func(resp *http.Response) error {
			msgs, _ := resp.Request.Context().Value(guardKey{}).([]string)
			if len(msgs) == 0 {
				return nil
			}
			injected, err := addWarnings(resp, msgs)
			if !injected {
				// Not in the response: the job log gets it before the
				// next stage instead.
				for _, m := range msgs {
					h.notice("%s", m)
				}
			}
			return err
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// The docker CLI prints this as "Error response from daemon:
			// <message>": the true cause instead of "is the daemon running?".
			fmt.Fprintf(h.log, "%s %s: %v\n", r.Method, r.URL.Path, err)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			json.NewEncoder(w).Encode(map[string]string{"message": err.Error()})
		},
	}, tr)
}

type guardKey struct{}

var (
	reAuth    = regexp.MustCompile(`^(/v[0-9.]+)?/auth$`)
	reService = regexp.MustCompile(`^(/v[0-9.]+)?/services/(create|[^/]+/update)$`)
)

// inspect looks at the requests the guards care about and returns the
// messages for the job. Bodies it reads are put back unchanged.
func (h *holder) inspect(r *http.Request) []string {
	if r.Method != http.MethodPost {
		return nil
	}
	switch {
	case reAuth.MatchString(r.URL.Path):
		var a struct {
			Username, Password, ServerAddress string `json:",omitempty"`
		}
		if body := peekBody(r); json.Unmarshal(body, &a) == nil && a.Password != "" {
			h.captureLogin(a.Username, a.Password)
		}
	case reService.MatchString(r.URL.Path):
		var spec struct {
			Name         string
			TaskTemplate struct {
				ContainerSpec struct{ Image string }
			}
		}
		if json.Unmarshal(peekBody(r), &spec) != nil {
			return nil
		}
		return h.serviceGuards(spec.Name, spec.TaskTemplate.ContainerSpec.Image, r.Header.Get("X-Registry-Auth"))
	}
	return nil
}

func peekBody(r *http.Request) []byte {
	if r.Body == nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	rest := r.Body
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), rest), rest}
	return b
}

// captureLogin records what docker login derives from a password, so that
// ferry run masks it from the next stage on (the ones known at prepare are
// masked from the start).
func (h *holder) captureLogin(user, password string) {
	h.notes.Lock()
	defer h.notes.Unlock()
	f, err := os.OpenFile(filepath.Join(h.cfg.Dir, CapturedFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	for _, s := range []string{password, base64.StdEncoding.EncodeToString([]byte(user + ":" + password))} {
		fmt.Fprintln(f, strconv.Quote(s))
	}
}

// serviceGuards: a registry image without credentials for the nodes, and
// CI_JOB_TOKEN credentials handed to the swarm.
func (h *holder) serviceGuards(name, image, registryAuth string) []string {
	reg := RegistryOf(image)
	var msgs []string
	if registryAuth == "" {
		if reg != "" && h.loggedIn(reg) {
			msgs = append(msgs, fmt.Sprintf("ferry: warning: service %s uses %s from %s, which this job logged in to, but the deploy sends no credentials (docker stack deploy without --with-registry-auth): nodes without a login reject every task with \"No such image\" while the deploy exits 0. Add --with-registry-auth.", name, image, reg))
		}
		return msgs
	}
	if h.cfg.JobToken == "" {
		return nil
	}
	raw, err := base64.URLEncoding.DecodeString(registryAuth)
	if err != nil {
		raw, _ = base64.StdEncoding.DecodeString(registryAuth)
	}
	var a struct{ Password string }
	if json.Unmarshal(raw, &a) == nil && a.Password == h.cfg.JobToken {
		msgs = append(msgs, fmt.Sprintf("ferry: note: service %s gets this job's CI_JOB_TOKEN as its registry credentials (--with-registry-auth after docker login with CI_JOB_TOKEN). The token expires when the job ends: a node that pulls %s later (rescheduling, scaling, a node restart) will fail. Log in with a deploy token (CI_DEPLOY_USER/CI_DEPLOY_PASSWORD) for stacks.", name, image))
	}
	return msgs
}

// loggedIn reports whether the job's DOCKER_CONFIG has a login for reg.
func (h *holder) loggedIn(reg string) bool {
	b, err := os.ReadFile(filepath.Join(h.cfg.DockerConfig, "config.json"))
	if err != nil {
		return false
	}
	var c struct {
		Auths map[string]json.RawMessage `json:"auths"`
	}
	if json.Unmarshal(b, &c) != nil {
		return false
	}
	for k := range c.Auths {
		if normalizeRegistry(k) == reg {
			return true
		}
	}
	return false
}

// RegistryOf returns the registry host of an image reference, "docker.io"
// for Docker Hub images.
func RegistryOf(image string) string {
	first, _, found := strings.Cut(image, "/")
	if !found || !(strings.ContainsAny(first, ".:") || first == "localhost") {
		return "docker.io"
	}
	return first
}

func normalizeRegistry(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	k, _, _ = strings.Cut(k, "/")
	switch k {
	case "index.docker.io", "registry-1.docker.io", "docker.io":
		return "docker.io"
	}
	return k
}

// addWarnings appends msgs to the response's JSON "Warnings" (service
// create and update responses have it; the docker CLI prints them).
// It reports whether they went in.
func addWarnings(resp *http.Response, msgs []string) (bool, error) {
	if resp.StatusCode/100 != 2 || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		return false, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	injected := false
	var m map[string]any
	if json.Unmarshal(b, &m) == nil {
		w, _ := m["Warnings"].([]any)
		for _, s := range msgs {
			w = append(w, s)
		}
		m["Warnings"] = w
		if nb, err := json.Marshal(m); err == nil {
			b, injected = nb, true
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return injected, nil
}
