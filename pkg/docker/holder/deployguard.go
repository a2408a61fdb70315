package holder

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The deploy rules (pkg/deployguard) on a Docker engine. The target of a
// `docker compose up` is its compose project, of a `docker stack deploy`
// its stack: what compose and the docker CLI label every container or
// service with. Before the first change to a target the holder lists what
// the engine has of it (one request per target and job) and asks the guard
// about each container's or service's labels; every container or service
// the job creates or updates through the holder is labelled with the job's
// records. A refusal answers the request with the one-line message (the
// docker CLI and compose print it as the daemon's error) and the engine
// sees nothing of it.
const (
	composeProjectLabel = "com.docker.compose.project"
	stackLabel          = "com.docker.stack.namespace"
)

var (
	reVersion       = regexp.MustCompile(`^/v[0-9.]+`)
	reContainerOp   = regexp.MustCompile(`^/containers/([^/]+)(/(stop|kill|restart|rename|update|pause|start))?$`)
	reServiceUpdate = regexp.MustCompile(`^/services/([^/]+)/update$`)
)

// guardState is one engine's decisions, per target, for this job.
type guardState struct {
	mu      sync.Mutex
	decided map[string]*targetDecision
}

type targetDecision struct {
	refusal string
	// containers of a refused compose project (ids and names): compose v1
	// stops and renames the old container before it creates the new one,
	// so those calls are refused too.
	containers []string
}

// guardDeploys wraps next with the deploy rules when the job has them.
func (h *holder) guardDeploys(next http.Handler, engine http.RoundTripper) http.Handler {
	g := h.cfg.Guard
	el := h.newEngineLock(engine)
	if !g.Active() && el == nil {
		return next
	}
	st := &guardState{decided: map[string]*targetDecision{}}
	client := &http.Client{Transport: engine, Timeout: 30 * time.Second}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if el != nil {
			defer h.takeEarly(r, el)
			el.l.Prime() // once: the spare that makes a free take fast
			// The lock first: the rules then judge what the engine has
			// once the previous deploy of the target is over.
			took, msg := h.lockFor(w, r, el)
			if msg != "" {
				h.refuse(w, r, http.StatusServiceUnavailable, msg)
				return
			}
			for _, t := range took {
				if !g.Active() {
					break
				}
				kind := "compose"
				if t.Kind == "stack" {
					kind = "stack"
				}
				st.forget(kind, t.Name)
				h.decide(r.Context(), client, st, kind, t.Name)
			}
		}
		if g.Active() {
			if msg := h.checkDeploy(r, client, st); msg != "" {
				h.refuse(w, r, http.StatusConflict, msg)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// forget drops the decision on a target: the next change decides again.
func (st *guardState) forget(kind, name string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.decided, kind+"\x00"+name)
}

// checkDeploy returns the refusal of r, or "" (r may have been given the
// job's labels).
func (h *holder) checkDeploy(r *http.Request, client *http.Client, st *guardState) string {
	p := reVersion.ReplaceAllString(r.URL.Path, "")
	switch {
	case r.Method == http.MethodGet && p == "/containers/json":
		// compose lists its project's containers before it changes any:
		// decide then, so that a refused project's stops are refused too.
		if name := labelFilter(r.URL.Query().Get("filters"), composeProjectLabel); name != "" {
			h.decide(r.Context(), client, st, "compose", name)
		}
	case r.Method == http.MethodPost && p == "/containers/create":
		return h.labelRequest(r, client, st, "compose", composeProjectLabel, false)
	case r.Method == http.MethodPost && (p == "/services/create" || reServiceUpdate.MatchString(p)):
		return h.labelRequest(r, client, st, "stack", stackLabel, true)
	case (r.Method == http.MethodPost || r.Method == http.MethodDelete) && reContainerOp.MatchString(p):
		ref := reContainerOp.FindStringSubmatch(p)[1]
		if d := st.refusedContainer(ref); d != nil {
			return d.refusal
		}
	}
	return ""
}

// labelRequest decides the target named by the body's label and adds the
// job's records to its labels.
func (h *holder) labelRequest(r *http.Request, client *http.Client, st *guardState, kind, label string, service bool) string {
	body := peekBody(r)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers go back as they came
	var doc map[string]any
	if dec.Decode(&doc) != nil {
		return ""
	}
	labels, _ := doc["Labels"].(map[string]any)
	name, _ := labels[label].(string)
	if name == "" {
		return "" // not a compose project's container, not a stack's service
	}
	if d := h.decide(r.Context(), client, st, kind, name); d.refusal != "" {
		return d.refusal
	}
	for k, v := range h.cfg.Guard.ID.Records() {
		labels[k] = v
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return ""
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	r.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return ""
}

// decide lists the target's containers or services once per job and asks
// the guard about each one's labels.
func (h *holder) decide(ctx context.Context, client *http.Client, st *guardState, kind, name string) *targetDecision {
	key := kind + "\x00" + name
	st.mu.Lock()
	defer st.mu.Unlock()
	if d, ok := st.decided[key]; ok {
		return d
	}
	d := &targetDecision{}
	target := "compose project " + name
	filter := composeProjectLabel
	path := "/containers/json?all=1&filters="
	if kind == "stack" {
		target, filter, path = "stack "+name, stackLabel, "/services?filters="
	}
	f, _ := json.Marshal(map[string][]string{"label": {filter + "=" + name}})
	objs, err := listLabels(ctx, client, path+url.QueryEscape(string(f)), kind == "stack")
	if err != nil {
		// Not decided: the next change asks again.
		fmt.Fprintf(h.log, "deploy guard: listing %s: %v\n", target, err)
		return d
	}
	notes := map[string]bool{}
	for _, o := range objs {
		dec, err := h.cfg.Guard.Check(target, o.labels)
		if err != nil {
			d.refusal = err.Error()
			break
		}
		if dec.Note != "" && !notes[dec.Note] {
			notes[dec.Note] = true
			h.notice("%s", dec.Note)
		}
	}
	if d.refusal != "" {
		for _, o := range objs {
			d.containers = append(d.containers, o.refs...)
		}
	}
	st.decided[key] = d
	return d
}

// refusedContainer is the refused decision a container (id, id prefix or
// name) belongs to.
func (st *guardState) refusedContainer(ref string) *targetDecision {
	st.mu.Lock()
	defer st.mu.Unlock()
	ref = strings.TrimPrefix(ref, "/")
	for _, d := range st.decided {
		if d.refusal == "" {
			continue
		}
		for _, c := range d.containers {
			if c == ref || (len(ref) >= 12 && strings.HasPrefix(c, ref)) {
				return d
			}
		}
	}
	return nil
}

type labelled struct {
	refs   []string
	labels map[string]string
}

// listLabels reads the engine's containers (or services) and their labels.
func listLabels(ctx context.Context, client *http.Client, path string, services bool) ([]labelled, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var out []labelled
	if services {
		var l []struct {
			ID   string
			Spec struct {
				Name   string
				Labels map[string]string
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			return nil, err
		}
		for _, s := range l {
			out = append(out, labelled{refs: []string{s.ID, s.Spec.Name}, labels: s.Spec.Labels})
		}
		return out, nil
	}
	var l []struct {
		ID     string `json:"Id"`
		Names  []string
		Labels map[string]string
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, err
	}
	for _, c := range l {
		refs := []string{c.ID}
		for _, n := range c.Names {
			refs = append(refs, strings.TrimPrefix(n, "/"))
		}
		out = append(out, labelled{refs: refs, labels: c.Labels})
	}
	return out, nil
}

// labelFilter is the value of a "label=<key>=<value>" filter of a Docker
// list request's filters parameter (both of its JSON forms).
func labelFilter(filters, key string) string {
	if filters == "" {
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(filters), &m) != nil {
		return ""
	}
	var vals []string
	if json.Unmarshal(m["label"], &vals) != nil {
		var set map[string]bool
		if json.Unmarshal(m["label"], &set) != nil {
			return ""
		}
		for k := range set {
			vals = append(vals, k)
		}
	}
	for _, v := range vals {
		if name, ok := strings.CutPrefix(v, key+"="); ok {
			return name
		}
	}
	return ""
}
