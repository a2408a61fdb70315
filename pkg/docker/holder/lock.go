package holder

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/docker/enginelock"
)

// The deploy lock on a Docker engine (pkg/docker/enginelock,
// docs/deploy-safety.md): the job's first request that changes a compose
// project or a stack takes the target's lock on that engine, and the
// holder keeps it until it stops (cleanup, cancel, the runner's death).
// The request waits in the holder for its turn; the docker CLI and compose
// v2 have no timeout on it, and docker-compose v1 (docker-py, a read
// timeout of COMPOSE_HTTP_TIMEOUT, 60 s) is kept waiting by a "100
// Continue" every second, which Python's http.client reads and skips.

// LockConfig is the job's deploy lock settings; nil in Config: no lock.
type LockConfig struct {
	TTL time.Duration
	// Holder names the job in the others' waiting line: "team-a/web
	// pipeline 5212 job 5060270".
	Holder string
	// Deadline is the job's timeout: no wait goes past it.
	Deadline time.Time
	// ProjectDir (CI_PROJECT_DIR) is the only tree the holder reads the
	// job's compose files and .env in, for a deploy command's project
	// name (command.go).
	ProjectDir string
}

var (
	reLockCreate = regexp.MustCompile(`^/(containers|networks|volumes|services|secrets|configs)/create$|^/services/[^/]+/update$`)
	reLockCtr    = regexp.MustCompile(`^/containers/([^/]+)/(start|stop|kill|restart|rename|update|pause|unpause)$`)
	reLockDelete = regexp.MustCompile(`^/(containers|services|networks|volumes)/([^/]+)$`)
)

// engineLock is one engine's lock state for this job.
type engineLock struct {
	l      *enginelock.Locker
	client *http.Client
	mu     sync.Mutex
	refs   map[string]*enginelock.Target // what a container/service/... belongs to; nil: nothing
}

func (h *holder) newEngineLock(engine http.RoundTripper) *engineLock {
	c := h.cfg.Lock
	if c == nil {
		return nil
	}
	el := &engineLock{
		client: &http.Client{Transport: engine, Timeout: 30 * time.Second},
		refs:   map[string]*enginelock.Target{},
		l: &enginelock.Locker{
			Client:   &http.Client{Transport: engine},
			TTL:      c.TTL,
			Holder:   c.Holder,
			Deadline: c.Deadline,
			Log:      h.log,
			Notice:   h.notice,
		},
	}
	h.mu.Lock()
	h.locks = append(h.locks, el)
	h.mu.Unlock()
	return el
}

// lockFor takes the lock of the target r changes, if any, before r goes
// on. It returns whether this call took it (the guard then decides the
// target again: what the engine has may have changed while it waited) and
// the error line for the job.
func (h *holder) lockFor(w http.ResponseWriter, r *http.Request, el *engineLock) ([]enginelock.Target, string) {
	var want []enginelock.Target
	if !handshake(r) {
		want = commandTargets(r, h.cfg.Lock.ProjectDir)
	}
	if t := el.target(r); t != nil {
		want = append(want, *t)
	}
	var took []enginelock.Target
	for _, t := range want {
		if el.l.Held(t) {
			if el.l.TakenEarly(t) {
				// Taken at the handshake: this request's take, for
				// the caller (the deploy rules decide again).
				took = append(took, t)
			}
			continue
		}
		if msg := h.take(w, r, el, t); msg != "" {
			return nil, msg
		}
		took = append(took, t)
	}
	return took, ""
}

// takeEarly follows a handshake request once it is answered: a deploy
// command's next request takes its targets' locks, so they are taken now
// in the background, while the client works, if free (the request then
// finds them held, or waits for the rest of the take). After the answer,
// not before: the handshake's upstream connection is then idle again for
// the take (a second one would be a new SSH session, ~10 ms).
func (h *holder) takeEarly(r *http.Request, el *engineLock) {
	if !handshake(r) {
		return
	}
	for _, t := range commandTargets(r, h.cfg.Lock.ProjectDir) {
		el.l.TakeEarly(t)
	}
}

func (h *holder) take(w http.ResponseWriter, r *http.Request, el *engineLock, t enginelock.Target) string {
	var keepalive func()
	if ua := r.Header.Get("User-Agent"); strings.Contains(ua, "docker-py/") || strings.Contains(ua, "python-requests/") {
		keepalive = func() { w.WriteHeader(http.StatusContinue) }
	}
	start := time.Now()
	if err := el.l.Acquire(r.Context(), t, keepalive); err != nil {
		if r.Context().Err() != nil && time.Now().Before(h.cfg.Lock.Deadline) {
			return "ferry: deploy lock: the request was cancelled while waiting for " + t.String()
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "ferry: ") {
			msg = "ferry: " + msg
		}
		return msg
	}
	// What the lock cost this request (make bench reads it).
	fmt.Fprintf(h.log, "deploy lock: %s held for %s %s after %s\n", t, r.Method, r.URL.Path, time.Since(start))
	if d := time.Since(start); d > time.Second {
		h.notice("ferry: deploy lock: %s taken after waiting %s", t, d.Round(time.Second))
	}
	return ""
}

// target is the compose project or stack r changes, or nil (a read, or
// nothing of a project or stack).
func (el *engineLock) target(r *http.Request) *enginelock.Target {
	p := reVersion.ReplaceAllString(r.URL.Path, "")
	switch r.Method {
	case http.MethodPost:
		if reLockCreate.MatchString(p) {
			var doc struct{ Labels map[string]string }
			if json.Unmarshal(peekBody(r), &doc) != nil {
				return nil
			}
			return targetOf(doc.Labels)
		}
		if m := reLockCtr.FindStringSubmatch(p); m != nil {
			return el.lookup(r.Context(), "containers", m[1])
		}
	case http.MethodDelete:
		if m := reLockDelete.FindStringSubmatch(p); m != nil && m[2] != "prune" {
			return el.lookup(r.Context(), m[1], m[2])
		}
	}
	return nil
}

func targetOf(labels map[string]string) *enginelock.Target {
	if n := labels[composeProjectLabel]; n != "" {
		return &enginelock.Target{Kind: "compose project", Name: n}
	}
	if n := labels[stackLabel]; n != "" {
		return &enginelock.Target{Kind: "stack", Name: n}
	}
	return nil
}

// lookup reads the labels of the object a request names (once per object
// and job).
func (el *engineLock) lookup(ctx context.Context, kind, ref string) *enginelock.Target {
	key := kind + "/" + ref
	el.mu.Lock()
	t, ok := el.refs[key]
	el.mu.Unlock()
	if ok {
		return t
	}
	path := "/" + kind + "/" + ref
	if kind == "containers" {
		path += "/json"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return nil
	}
	resp, err := el.client.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil // the engine answers the request itself (404)
	}
	var doc struct {
		Labels map[string]string
		Config struct{ Labels map[string]string }
		Spec   struct{ Labels map[string]string }
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&doc) != nil {
		return nil
	}
	for _, l := range []map[string]string{doc.Config.Labels, doc.Spec.Labels, doc.Labels} {
		if t = targetOf(l); t != nil {
			break
		}
	}
	el.mu.Lock()
	el.refs[key] = t
	el.mu.Unlock()
	return t
}

// releaseLocks frees every lock and ticket of the job on every engine.
func (h *holder) releaseLocks() {
	h.mu.Lock()
	locks := h.locks
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, el := range locks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			el.l.Release(ctx)
		}()
	}
	wg.Wait()
}

// refuse answers r with msg as the daemon's error.
func (h *holder) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	fmt.Fprintf(h.log, "%s %s: refused: %s\n", r.Method, r.URL.Path, msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}
