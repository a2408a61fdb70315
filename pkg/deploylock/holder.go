package deploylock

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/pkg/deploylock/lockclient"
	"gitlab.com/ferry-ci/ferry/pkg/docker/jobsocket"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
	"gitlab.com/ferry-ci/ferry/pkg/stallguard"
)

// Main is the holder process (`ferry-engine deploy-lock-holder <dir>`):
// lockclient.Config on stdin, the listening socket on fd 3, its log on
// stderr. It serves the job's kubectl until SIGTERM (cleanup), the
// runner's death or the job's deadline (+1 h), then releases every lock it
// holds and leaves every queue it is in.
func Main(stdin io.Reader, stderr io.Writer) int {
	var cfg lockclient.Config
	if err := json.NewDecoder(stdin).Decode(&cfg); err != nil {
		fmt.Fprintf(stderr, "ferry: deploy lock holder: bad config: %v\n", err)
		return 1
	}
	f := os.NewFile(3, "lock.sock")
	fl, err := net.FileListener(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "ferry: deploy lock holder: socket: %v\n", err)
		return 1
	}
	ul, ok := fl.(*net.UnixListener)
	if !ok {
		fmt.Fprintln(stderr, "ferry: deploy lock holder: fd 3 is not a unix socket")
		return 1
	}
	start, err := jobproc.StartTime(os.Getpid())
	if err != nil {
		// Not a reason to end: the job's calls then always ask.
		fmt.Fprintf(stderr, "ferry: deploy lock holder: no held marks: %v\n", err)
	}
	h := &holder{cfg: cfg, log: stderr, start: start, held: map[Target]*Lock{}, clients: map[[32]byte]kubernetes.Interface{}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithDeadline(ctx, cfg.Deadline.Add(time.Hour))
	defer cancel()
	go func() {
		if jobproc.WaitPIDExit(ctx, cfg.RunnerPID) {
			fmt.Fprintln(stderr, "ferry: deploy lock holder: the runner process died: releasing")
			cancel()
		}
	}()
	l := jobsocket.Wrap(ul, jobsocket.Policy{UID: cfg.UID, JobResponseFile: cfg.JobResponseFile, RunnerPID: cfg.RunnerPID},
		func(r jobsocket.Refusal) { fmt.Fprintf(stderr, "ferry: deploy lock holder: %s\n", r) })
	go func() {
		<-ctx.Done()
		l.Close()
		// Nobody waits for the holder to end (cleanup only signals it):
		// whatever happens from here (a stalled API server, a connection
		// that never ends), it ends within releaseBudget, and what it could
		// not release runs out with its lease.
		time.AfterFunc(releaseBudget, func() {
			fmt.Fprintf(stderr, "ferry: deploy lock holder: not done releasing after %s: exiting (what it holds runs out with its lease)\n", releaseBudget)
			os.Exit(1)
		})
	}()
	go h.renew(ctx)
	go h.prewarm(ctx)
	var wg sync.WaitGroup
	for {
		c, err := l.Accept()
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.serve(ctx, c)
		}()
	}
	wg.Wait() // waiters leave their queues as their contexts end
	h.releaseAll()
	os.Remove(ul.Addr().String())
	return 0
}

// releaseBudget bounds the holder's end: leaving queues (10 s each at
// most) and releasing (5 s each).
const releaseBudget = 30 * time.Second

type holder struct {
	cfg     lockclient.Config
	log     io.Writer
	start   uint64 // this process's start time, for the held marks
	mu      sync.Mutex
	held    map[Target]*Lock
	clients map[[32]byte]kubernetes.Interface
	// per target: one acquisition at a time (two kubectl calls of one job
	// at once share the job's place).
	acq sync.Map
}

func (h *holder) who() Who {
	return Who{ID: h.cfg.ID, Project: h.cfg.Project, Pipeline: h.cfg.Pipeline, Job: h.cfg.Job, Since: time.Now()}
}

func (h *holder) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	enc := json.NewEncoder(c)
	r := bufio.NewReader(c)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return
	}
	var req lockclient.Request
	if err := json.Unmarshal(line, &req); err != nil {
		enc.Encode(lockclient.Reply{Error: "ferry: deploy lock: bad request: " + err.Error()})
		return
	}
	// The kubectl's end of the connection closing (cancelled, killed) ends
	// the wait.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, r)
		cancel()
	}()
	if err := h.acquire(rctx, req, func(s string) { enc.Encode(lockclient.Reply{Wait: s}) }); err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			fmt.Fprintf(h.log, "ferry: deploy lock holder: %s: the kubectl left while waiting\n", req.Namespace)
			return
		}
		if dl := h.cfg.Deadline; !dl.IsZero() && time.Now().After(dl) {
			err = fmt.Errorf("ferry: deploy lock: still not free at the job's timeout (%s)", dl.UTC().Format(time.RFC3339))
		}
		enc.Encode(lockclient.Reply{Error: err.Error()})
		return
	}
	enc.Encode(lockclient.Reply{OK: true})
}

func (h *holder) acquire(ctx context.Context, req lockclient.Request, wait func(string)) error {
	if req.Namespace == "" {
		return fmt.Errorf("ferry: deploy lock: no namespace")
	}
	t := Target{Namespace: req.Namespace, Name: LeaseName(h.cfg.Environment), Env: h.cfg.Environment}
	mu, _ := h.acq.LoadOrStore(t, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	h.mu.Lock()
	_, ok := h.held[t]
	h.mu.Unlock()
	if ok {
		return nil
	}
	cl, err := h.client(req)
	if err != nil {
		return err
	}
	k := &Lock{Client: cl, Me: h.who(), Duration: h.cfg.LeaseDuration}
	if !h.cfg.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, h.cfg.Deadline)
		defer cancel()
	}
	start := time.Now()
	if err := k.Acquire(ctx, t, wait); err != nil {
		if ctx.Err() != nil {
			// The kubectl left (or the job ends) with a write in flight:
			// one the server did apply would leave a lock nobody renews
			// or releases, until it runs out.
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = k.Release(rctx, t)
			cancel()
		}
		return err
	}
	h.mu.Lock()
	h.held[t] = k
	h.mu.Unlock()
	if h.start == 0 {
		// no marks (Main)
	} else if err := lockclient.MarkHeld(h.cfg.Dir, t.Namespace, jobproc.Owner{PID: os.Getpid(), Start: h.start}); err != nil {
		fmt.Fprintf(h.log, "ferry: deploy lock holder: mark %s held: %v (the job's later calls ask)\n", t, err)
	}
	fmt.Fprintf(h.log, "ferry: deploy lock holder: took %s (%s) in %s for kubectl %s\n", t, t.Name, time.Since(start).Round(time.Millisecond), req.Verb)
	return nil
}

// client builds (once per credentials) a clientset from what the kubectl
// resolved, or from the job's kubeconfig.
func (h *holder) client(req lockclient.Request) (kubernetes.Interface, error) {
	b, _ := json.Marshal(req.Creds)
	key := sha256.Sum256(append(b, fmt.Sprint(req.UseJobKubeconfig)...))
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[key]; ok {
		return c, nil
	}
	var cfg *rest.Config
	if req.UseJobKubeconfig || req.Creds.Server == "" {
		if h.cfg.Kubeconfig == "" {
			return nil, fmt.Errorf("ferry: deploy lock: the call's credentials cannot be handed to the lock holder and the job has no kubeconfig of ferry's")
		}
		var err error
		if cfg, err = clientcmd.BuildConfigFromFlags("", h.cfg.Kubeconfig); err != nil {
			return nil, fmt.Errorf("ferry: deploy lock: %w", err)
		}
	} else {
		c := req.Creds
		cfg = &rest.Config{Host: c.Server, BearerToken: c.Token, Username: c.Username, Password: c.Password,
			TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData, CertData: c.CertData, KeyData: c.KeyData,
				ServerName: c.TLSServerName, Insecure: c.Insecure}}
	}
	cfg.UserAgent = "ferry-deploy-lock"
	// Leases are built-in: protobuf is cheaper than JSON to encode and,
	// for the API server, to decode.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.QPS, cfg.Burst = 50, 100
	cfg = stallguard.Guard(cfg, 0)
	cl, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("ferry: deploy lock: %w", err)
	}
	h.clients[key] = cl
	return cl, nil
}

// prewarm builds the client of the job's own kubeconfig and opens its
// connection (one cheap request) while the job is still starting, so that
// the job's first mutating call does not pay for the TLS handshake. The
// kubectl sends the same credentials when the script uses ferry's
// kubeconfig, the common case.
func (h *holder) prewarm(ctx context.Context) {
	if h.cfg.Kubeconfig == "" {
		return
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", h.cfg.Kubeconfig)
	if err != nil || cfg.ExecProvider != nil || cfg.AuthProvider != nil {
		return
	}
	if err := rest.LoadTLSFiles(cfg); err != nil {
		return
	}
	ns, _, _ := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: h.cfg.Kubeconfig}, nil).Namespace()
	req := lockclient.Request{Creds: lockclient.Creds{Server: cfg.Host, Token: cfg.BearerToken, CAData: cfg.CAData,
		CertData: cfg.CertData, KeyData: cfg.KeyData, TLSServerName: cfg.ServerName, Insecure: cfg.Insecure,
		Username: cfg.Username, Password: cfg.Password}}
	cl, err := h.client(req)
	if err != nil || ns == "" {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _ = cl.CoordinationV1().Leases(ns).Get(wctx, LeaseName(h.cfg.Environment), metav1.GetOptions{})
}

// renew keeps every held lease alive: every third of its duration.
func (h *holder) renew(ctx context.Context) {
	tick := time.NewTicker(h.cfg.LeaseDuration / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		held := make(map[Target]*Lock, len(h.held))
		for t, k := range h.held {
			held[t] = k
		}
		h.mu.Unlock()
		for t, k := range held {
			rctx, cancel := context.WithTimeout(ctx, h.cfg.LeaseDuration/3)
			lost, err := k.Renew(rctx, t)
			cancel()
			switch {
			case err != nil:
				fmt.Fprintf(h.log, "ferry: deploy lock holder: renew %s: %v\n", t, err)
			case lost:
				fmt.Fprintf(h.log, "ferry: deploy lock holder: lost %s (not renewed for a lease duration)\n", t)
				lockclient.UnmarkHeld(h.cfg.Dir, t.Namespace)
				h.mu.Lock()
				delete(h.held, t)
				h.mu.Unlock()
			}
		}
	}
}

// releaseAll gives up every held lease, in a stable order.
func (h *holder) releaseAll() {
	h.mu.Lock()
	ts := make([]Target, 0, len(h.held))
	for t := range h.held {
		ts = append(ts, t)
	}
	h.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].Namespace+"/"+ts[i].Name < ts[j].Namespace+"/"+ts[j].Name })
	for _, t := range ts {
		lockclient.UnmarkHeld(h.cfg.Dir, t.Namespace)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := h.held[t].Release(ctx, t); err != nil {
			fmt.Fprintf(h.log, "ferry: deploy lock holder: release %s: %v\n", t, err)
		} else {
			fmt.Fprintf(h.log, "ferry: deploy lock holder: released %s\n", t)
		}
		cancel()
	}
}
