package enginelock

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Labels of the lock and ticket containers.
const (
	LabelTarget = "ferry.gitlab.io/lock-target" // the target's hash
	LabelName   = "ferry.gitlab.io/lock-name"   // "compose project web"
	LabelRole   = "ferry.gitlab.io/lock-role"   // "lock" or "ticket"
	LabelHolder = "ferry.gitlab.io/lock-holder" // "team-a/web pipeline 5212 job 5060270"
	LabelSeq    = "ferry.gitlab.io/lock-seq"    // the waiter's arrival (unix nanos, its host's clock)
	LabelLease  = "ferry.gitlab.io/lock-lease"  // "1" on every lease container (the events filter)
	LabelExpiry = "ferry.gitlab.io/lock-expiry" // a spare's last useful second (unix, the job's deadline)
)

// Target is what one lock serialises: a compose project or a stack on one
// engine.
type Target struct {
	Kind string // "compose project" or "stack"
	Name string
}

func (t Target) String() string { return t.Kind + " " + t.Name }

// Hash names the target's containers: a project name may hold characters
// a container name may not, and the kind keeps a stack and a compose
// project of one name apart.
func (t Target) Hash() string {
	s := sha256.Sum256([]byte(t.Kind + "\x00" + t.Name))
	return hex.EncodeToString(s[:])[:20]
}

// LockName and TicketPrefix are the container names of a target's lock and
// its waiters' tickets.
func (t Target) LockName() string     { return "ferry-lock-" + t.Hash() }
func (t Target) TicketPrefix() string { return "ferry-lockq-" + t.Hash() + "-" }

// Locker takes and holds one job's locks on one engine.
type Locker struct {
	// Client reaches the engine's API at http://docker; no Timeout (the
	// events stream lives as long as a wait).
	Client *http.Client
	TTL    time.Duration
	// Holder names this job for the others' waiting line: "team-a/web
	// pipeline 5212 job 5060270".
	Holder string
	// Deadline is the job's timeout: no wait goes past it.
	Deadline time.Time
	// Log gets diagnostics (the holder's log); Notice lines for the job log.
	Log    io.Writer
	Notice func(format string, args ...any)

	mu          sync.Mutex
	held        map[string]*lease // by target hash
	tickets     map[string]*lease // by container id
	image       string            // the lease image's tag
	unavailable string            // why this engine has no lock, once known
	warned      bool
	renewing    bool
	stop        chan struct{}
	primed      bool
	released    bool
	spare       *lease                   // created, not started: the next free take renames it
	seenCreated map[string]time.Time     // engine time a container was first seen never started
	taking      map[string]chan struct{} // by target hash: a take under way (Acquire, TakeEarly), closed once done
	earlyRun    sync.WaitGroup           // TakeEarly goroutines: Release waits for them
	earlyTaken  map[string]bool          // by target hash: taken by TakeEarly, not yet told (TakenEarly)
}

type lease struct {
	target  Target
	id      string
	started chan struct{} // closed once the container runs (or failed to)
	pending *time.Timer   // a lock's start, not yet due
}

// requestTimeout bounds each of the locker's own requests.
const requestTimeout = 30 * time.Second

// Acquire returns once this job holds t's lock: at once when it already
// does; after one list and one create when t is free; else after waiting
// its turn (one Notice line naming the holder), calling keepalive every
// second while it waits. It fails when ctx ends (the client went away: the
// job was cancelled), at the Deadline, or on an engine error. A lock that
// cannot exist on this engine (architecture) is reported once and
// Acquire returns nil: the deploy goes on unlocked.
func (l *Locker) Acquire(ctx context.Context, t Target, keepalive func()) error {
	ctx, cancel := context.WithDeadline(ctx, l.Deadline)
	defer cancel()
	// One take of a target at a time in this job: two would race, and
	// the loser would queue behind the lock its own job holds (a take at
	// the handshake, TakeEarly, and the next request's; or two requests
	// at once). A later one waits for the first, then finds it held.
	waited := false
	for {
		l.mu.Lock()
		l.init()
		_, held := l.held[t.Hash()]
		if held && waited {
			delete(l.earlyTaken, t.Hash()) // told: this call returns it taken
		}
		busy := l.taking[t.Hash()]
		if held || l.unavailable != "" {
			l.mu.Unlock()
			return nil
		}
		if busy == nil {
			mine := make(chan struct{})
			l.taking[t.Hash()] = mine
			l.mu.Unlock()
			defer l.doneTaking(t, mine)
			break
		}
		l.mu.Unlock()
		select {
		case <-busy:
			waited = true
		case <-ctx.Done():
			return fmt.Errorf("ferry: deploy lock: %s: waiting for this job's other take of it: %w", t, ctx.Err())
		}
	}
	err := l.acquire(ctx, t, keepalive)
	if errors.Is(err, errUnavailable) && l.unavailableNow() {
		return nil
	}
	return err
}

// init needs l.mu.
func (l *Locker) init() {
	if l.held == nil {
		l.held, l.tickets, l.stop = map[string]*lease{}, map[string]*lease{}, make(chan struct{})
		l.seenCreated = map[string]time.Time{}
		l.taking, l.earlyTaken = map[string]chan struct{}{}, map[string]bool{}
		l.image, _ = leaseImage(l.TTL)
	}
}

// Prime creates, in the background, the job's spare lease container on
// this engine (once): a container created but not started, which the first
// free take renames to the lock's name (a rename is as atomic as a create,
// and a few milliseconds where a create is tens to hundreds: dockerd
// writes the container and prepares its filesystem). Call it at the job's
// first use of the engine. It also removes other jobs' spares past their
// expiry (a holder that died before its cleanup).
func (l *Locker) Prime() {
	l.mu.Lock()
	l.init()
	if l.primed || l.unavailable != "" {
		l.mu.Unlock()
		return
	}
	l.primed = true
	l.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		l.sweepSpares(ctx)
		ls, err := l.createContainer(ctx, Target{}, "spare", "ferry-lockspare-"+randHex(10))
		if err != nil {
			fmt.Fprintf(l.Log, "deploy lock: spare: %v\n", err)
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.stop == nil || l.released {
			go l.remove(context.Background(), ls.id)
			return
		}
		l.spare = ls
	}()
}

// sweepSpares removes spares whose holder's job is over (by their expiry
// label, on the engine's clock).
func (l *Locker) sweepSpares(ctx context.Context) {
	f, _ := json.Marshal(map[string][]string{"label": {LabelRole + "=spare"}})
	var cs []container
	resp, err := l.do(ctx, http.MethodGet, "/containers/json?all=1&filters="+url.QueryEscape(string(f)), nil, &cs)
	if err != nil {
		return
	}
	now, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return
	}
	for _, c := range cs {
		if exp, err := strconv.ParseInt(c.Labels[LabelExpiry], 10, 64); err == nil && c.State == "created" && now.Unix() > exp {
			l.remove(ctx, c.ID)
		}
	}
}

// TakeEarly takes t's lock in the background if it is free (the free take
// of Acquire: one list, the rename of the spare), for a deploy command
// whose handshake was just answered: its next request takes the lock
// anyway (Acquire), and so finds it held, or waits for the rest of this
// take, instead of making the whole take then. The lock is taken a few
// milliseconds earlier, while the client works, by the same rules. If t is
// not free nothing is done: Acquire queues as ever, with its waiting line.
func (l *Locker) TakeEarly(t Target) {
	l.mu.Lock()
	l.init()
	_, held := l.held[t.Hash()]
	if _, busy := l.taking[t.Hash()]; held || busy || l.unavailable != "" || l.released {
		l.mu.Unlock()
		return
	}
	mine := make(chan struct{})
	l.taking[t.Hash()] = mine
	l.earlyRun.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.earlyRun.Done()
		defer l.doneTaking(t, mine)
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		start := time.Now()
		st, err := l.list(ctx, t)
		if err != nil || st.lock != nil || len(st.live) > 0 {
			return // Acquire decides, as ever
		}
		if ok, _ := l.createLock(ctx, t); ok {
			l.mu.Lock()
			l.earlyTaken[t.Hash()] = true
			l.mu.Unlock()
			fmt.Fprintf(l.Log, "deploy lock: %s taken at the deploy command's handshake in %s\n", t, time.Since(start))
		}
	}()
}

// doneTaking ends a take of t (Acquire, TakeEarly): the next may start.
func (l *Locker) doneTaking(t Target, mine chan struct{}) {
	l.mu.Lock()
	if l.taking[t.Hash()] == mine {
		delete(l.taking, t.Hash())
	}
	l.mu.Unlock()
	close(mine)
}

// TakenEarly reports, once, that TakeEarly took t's lock: the caller
// treats that as its own take (the deploy rules decide again on what the
// engine has once the lock is held).
func (l *Locker) TakenEarly(t Target) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := l.earlyTaken[t.Hash()]
	delete(l.earlyTaken, t.Hash())
	return ok
}

func (l *Locker) acquire(ctx context.Context, t Target, keepalive func()) error {
	st, err := l.list(ctx, t)
	if err != nil {
		return err
	}
	if st.lock == nil && len(st.live) == 0 {
		ok, err := l.createLock(ctx, t)
		if err != nil || ok {
			return err
		}
	}
	return l.wait(ctx, t, keepalive)
}

func (l *Locker) unavailableNow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unavailable == "" {
		return false
	}
	if !l.warned {
		l.warned = true
		l.Notice("ferry: warning: deploy lock unavailable on this engine: %s; deploys to it are not serialised", l.unavailable)
	}
	return true
}

// wait queues a ticket and waits for its turn: the oldest live ticket
// creates the lock once it is gone.
func (l *Locker) wait(ctx context.Context, t Target, keepalive func()) (err error) {
	changed := make(chan struct{}, 1)
	evctx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	go l.watch(evctx, t, changed)

	// A ticket whose start failed (the engine's runc, not the lease) is
	// removed by createLease; a new one is tried, twice at most.
	var ticket *lease
	for try := 0; ; try++ {
		ticket, err = l.createLease(ctx, t, "ticket", t.TicketPrefix()+randHex(6), true)
		if err == nil || try == 2 || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: queue for %s: %w", t, err)
	}
	l.mu.Lock()
	l.tickets[ticket.id] = ticket
	l.mu.Unlock()
	l.startRenewing()
	defer func() {
		l.mu.Lock()
		delete(l.tickets, ticket.id)
		l.mu.Unlock()
		// Also when ctx ended (a cancelled job): no ticket stays behind.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		l.remove(rctx, ticket.id)
	}()

	printed := false
	beat := time.NewTicker(time.Second)
	defer beat.Stop()
	for {
		st, err := l.list(ctx, t)
		if err != nil {
			return err
		}
		pos := -1
		for i, c := range st.live {
			if c.ID == ticket.id {
				pos = i
			}
		}
		if pos < 0 {
			// Our ticket expired (the engine was unreachable for a TTL):
			// queue again at the end.
			return l.wait(ctx, t, keepalive)
		}
		if st.lock == nil && pos == 0 {
			ok, err := l.createLock(ctx, t)
			if err != nil {
				return err
			}
			if ok {
				return nil
			}
			continue
		}
		if !printed && st.lock != nil {
			printed = true
			since := time.Unix(st.lock.Created, 0).UTC().Format("15:04:05")
			// A spare's lock was created before it was taken: it
			// started when it was taken.
			if at, ok := l.takenAt(ctx, st.lock); ok {
				since = at.UTC().Format("15:04:05")
			}
			l.Notice("ferry: deploy lock: %s is held by %s since %s; %d job(s) wait before this one; waiting (up to the job's timeout)",
				t, st.lock.Labels[LabelHolder], since, pos)
		}
		poll := time.NewTimer(l.TTL / 3)
	sleep:
		for {
			select {
			case <-ctx.Done():
				poll.Stop()
				if errors.Is(ctx.Err(), context.DeadlineExceeded) && !time.Now().Before(l.Deadline) {
					return fmt.Errorf("ferry: deploy lock: %s still held by %s at the job's timeout", t, holderOf(st))
				}
				return ctx.Err()
			case <-changed:
				break sleep
			case <-poll.C:
				break sleep
			case <-beat.C:
				if keepalive != nil {
					keepalive()
				}
			}
		}
		poll.Stop()
	}
}

// takenAt is when a lock was taken: the engine's event of its create or
// its rename to the lock's name (dockerd keeps its last 256 events; on a
// busier engine, when its lease started).
func (l *Locker) takenAt(ctx context.Context, c *container) (time.Time, bool) {
	f, _ := json.Marshal(map[string][]string{"container": {c.ID}, "event": {"create", "rename"}})
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ectx, http.MethodGet, fmt.Sprintf("http://docker/events?since=%d&until=%d&filters=%s",
		c.Created-1, time.Now().Add(time.Hour).Unix(), url.QueryEscape(string(f))), nil)
	if err != nil {
		return time.Time{}, false
	}
	// until is in the future: the engine streams past events, then
	// waits; the first ones are all that is needed.
	resp, err := l.Client.Do(req)
	if err != nil {
		return time.Time{}, false
	}
	defer resp.Body.Close()
	var at time.Time
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Action   string
			TimeNano int64 `json:"timeNano"`
			Actor    struct{ Attributes map[string]string }
		}
		done := make(chan error, 1)
		go func() { done <- dec.Decode(&ev) }()
		select {
		case err := <-done:
			if err != nil {
				return at, !at.IsZero()
			}
		case <-time.After(200 * time.Millisecond):
			return at, !at.IsZero()
		}
		if ev.Action == "create" || (ev.Action == "rename" && ev.Actor.Attributes["name"] == strings.TrimPrefix(c.Names[0], "/")) {
			at = time.Unix(0, ev.TimeNano)
		}
	}
}

func holderOf(st *state) string {
	if st.lock == nil {
		return "another job"
	}
	return st.lock.Labels[LabelHolder]
}

// watch signals changed on every container event of t's lock and tickets
// (a destroy is the lock passing on); the caller polls too, so a broken
// stream only slows it down.
func (l *Locker) watch(ctx context.Context, t Target, changed chan<- struct{}) {
	f, _ := json.Marshal(map[string][]string{"type": {"container"}, "label": {LabelLease + "=1"}, "event": {"destroy", "die", "rename"}})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/events?filters="+url.QueryEscape(string(f)), nil)
	if err != nil {
		return
	}
	resp, err := l.Client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev json.RawMessage
		if dec.Decode(&ev) != nil {
			return
		}
		select {
		case changed <- struct{}{}:
		default:
		}
	}
}

type container struct {
	ID      string `json:"Id"`
	Names   []string
	Created int64
	State   string
	Labels  map[string]string
}

// state is a target's lock and its live tickets, oldest first.
type state struct {
	lock *container
	live []container
}

// list reads t's containers and removes the dead ones: exited, or never
// started within a TTL (a holder that died between create and start),
// judged by the engine's own clock (its Date header).
func (l *Locker) list(ctx context.Context, t Target) (*state, error) {
	// By name: a lock taken by renaming a spare has no target label.
	f, _ := json.Marshal(map[string][]string{"name": {t.LockName(), t.TicketPrefix()}})
	var cs []container
	resp, err := l.do(ctx, http.MethodGet, "/containers/json?all=1&filters="+url.QueryEscape(string(f)), nil, &cs)
	if err != nil {
		return nil, fmt.Errorf("deploy lock: list %s: %w", t, err)
	}
	now, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		now = time.Now()
	}
	st := &state{}
	for i := range cs {
		c := &cs[i]
		dead := false
		switch c.State {
		case "running", "restarting", "paused":
		case "created":
			// Never started: its holder died between create (or
			// rename) and start, or is starting it right now. Dead once
			// seen so for longer than a lease.
			l.mu.Lock()
			first, ok := l.seenCreated[c.ID]
			if !ok {
				l.seenCreated[c.ID] = now
				first = now
			}
			l.mu.Unlock()
			dead = now.Sub(first) > l.TTL+2*time.Second
		case "removing":
			continue
		default: // exited, dead
			dead = true
		}
		if dead {
			fmt.Fprintf(l.Log, "deploy lock: removing the expired %s of %s\n", c.ID[:12], t)
			l.remove(ctx, c.ID)
			continue
		}
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		switch {
		case name == t.LockName():
			st.lock = c
		case strings.HasPrefix(name, t.TicketPrefix()):
			st.live = append(st.live, *c)
		}
		// Else a released lock, renamed, on its way out.
	}
	// The engine's creation second first, the waiter's own clock within it.
	sort.Slice(st.live, func(i, j int) bool {
		a, b := st.live[i], st.live[j]
		if a.Created != b.Created {
			return a.Created < b.Created
		}
		sa, _ := strconv.ParseInt(a.Labels[LabelSeq], 10, 64)
		sb, _ := strconv.ParseInt(b.Labels[LabelSeq], 10, 64)
		if sa != sb {
			return sa < sb
		}
		return a.ID < b.ID
	})
	return st, nil
}

// createLock tries to create t's lock container: false when another job's
// exists (the engine's names are unique: exactly one create wins).
func (l *Locker) createLock(ctx context.Context, t Target) (bool, error) {
	l.mu.Lock()
	sp := l.spare
	l.spare = nil
	l.mu.Unlock()
	if sp != nil {
		resp, err := l.do(ctx, http.MethodPost, "/containers/"+sp.id+"/rename?name="+t.LockName(), nil, nil)
		if err == nil {
			sp.target = t
			l.mu.Lock()
			l.held[t.Hash()] = sp
			l.mu.Unlock()
			l.startLater(sp)
			l.startRenewing()
			fmt.Fprintf(l.Log, "deploy lock: took %s (spare %s)\n", t, sp.id[:12])
			return true, nil
		}
		if resp != nil && resp.StatusCode == http.StatusConflict {
			l.mu.Lock()
			l.spare = sp
			l.mu.Unlock()
			return false, nil
		}
		fmt.Fprintf(l.Log, "deploy lock: rename the spare: %v\n", err)
		go l.remove(context.WithoutCancel(ctx), sp.id)
	}
	ls, err := l.createLease(ctx, t, "lock", t.LockName(), false)
	if errors.Is(err, errConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ferry: deploy lock: take %s: %w", t, err)
	}
	l.mu.Lock()
	l.held[t.Hash()] = ls
	l.mu.Unlock()
	l.startRenewing()
	fmt.Fprintf(l.Log, "deploy lock: took %s (%s)\n", t, ls.id[:12])
	return true, nil
}

var (
	errConflict    = errors.New("name taken")
	errUnavailable = errors.New("no lock on this engine")
)

// createLease creates and starts a lease container: now, or in the
// background when the caller need not wait for it. The create is the
// lock: a lock whose start is still under way is already held.
func (l *Locker) createLease(ctx context.Context, t Target, role, name string, wait bool) (*lease, error) {
	ls, err := l.createContainer(ctx, t, role, name)
	if err != nil {
		return nil, err
	}
	if wait {
		if err := l.start(ctx, ls, role); err != nil {
			l.remove(context.WithoutCancel(ctx), ls.id)
			return nil, err
		}
		return ls, nil
	}
	l.startLater(ls)
	return ls, nil
}

// createContainer creates a lease container, not started.
func (l *Locker) createContainer(ctx context.Context, t Target, role, name string) (*lease, error) {
	labels := map[string]string{
		LabelLease: "1", LabelRole: role, LabelHolder: l.Holder,
		LabelSeq: strconv.FormatInt(time.Now().UnixNano(), 10),
	}
	if role == "spare" {
		labels[LabelExpiry] = strconv.FormatInt(l.Deadline.Add(time.Hour).Unix(), 10)
	} else {
		labels[LabelTarget], labels[LabelName] = t.Hash(), t.String()
	}
	body := map[string]any{
		"Image":           l.image,
		"Labels":          labels,
		"NetworkDisabled": true,
		"HostConfig": map[string]any{
			"AutoRemove":     true,
			"NetworkMode":    "none",
			"ReadonlyRootfs": true,
			"CapDrop":        []string{"ALL"},
			"SecurityOpt":    []string{"no-new-privileges"},
			// Limits for the engine's side of starting it, not for the
			// lease program (one thread, no heap): runc's init, a Go
			// program, runs in the container's cgroups until it execs
			// the lease, and with 4 pids and 8 MiB it sometimes died
			// under load ("cannot start a stopped process", a ticket
			// refused in a loaded CI run).
			"Memory":    32 << 20,
			"PidsLimit": 32,
			"LogConfig": map[string]any{"Type": "none"},
		},
	}
	var created struct {
		ID string `json:"Id"`
	}
	resp, err := l.do(ctx, http.MethodPost, "/containers/create?name="+url.QueryEscape(name), body, &created)
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		// The engine lacks the lease image: load it once, try again.
		if err := l.loadImage(ctx); err != nil {
			return nil, err
		}
		resp, err = l.do(ctx, http.MethodPost, "/containers/create?name="+url.QueryEscape(name), body, &created)
	}
	if resp != nil && resp.StatusCode == http.StatusConflict {
		return nil, errConflict
	}
	if err != nil {
		return nil, err
	}
	return &lease{target: t, id: created.ID, started: make(chan struct{})}, nil
}

func (l *Locker) start(ctx context.Context, ls *lease, role string) error {
	defer close(ls.started)
	_, err := l.do(ctx, http.MethodPost, "/containers/"+ls.id+"/start", nil, nil)
	if err != nil {
		fmt.Fprintf(l.Log, "deploy lock: start %s %s of %s: %v\n", role, ls.id[:12], ls.target, err)
	}
	return err
}

// startLater starts a lock's lease a third of the lease after the take.
// Not at once: starting a container is a few hundred milliseconds of the
// engine's and the host's work (runc), which would compete with the deploy
// the lock was taken for; a job whose deploy ends sooner releases a lock
// that never ran (a fast DELETE). Safe: the name is the lock, and waiters
// take a never-started lock for dead only after seeing it so for longer
// than a lease.
func (l *Locker) startLater(ls *lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls.pending = time.AfterFunc(l.TTL/3, func() {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		l.start(ctx, ls, "lock")
	})
}

// startRenewing starts the renewal loop once: every third of the TTL, each
// held lock and live ticket gets SIGUSR1.
func (l *Locker) startRenewing() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.renewing {
		return
	}
	l.renewing = true
	go func() {
		tick := time.NewTicker(l.TTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			l.mu.Lock()
			var all []*lease
			for _, ls := range l.held {
				all = append(all, ls)
			}
			for _, ls := range l.tickets {
				all = append(all, ls)
			}
			l.mu.Unlock()
			for _, ls := range all {
				l.renew(ls)
			}
		}
	}()
}

func (l *Locker) renew(ls *lease) {
	select {
	case <-ls.started:
	default:
		return // still starting
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.TTL/3)
	defer cancel()
	resp, err := l.do(ctx, http.MethodPost, "/containers/"+ls.id+"/kill?signal=SIGUSR1", nil, nil)
	if err == nil {
		return
	}
	fmt.Fprintf(l.Log, "deploy lock: renew %s of %s: %v\n", ls.id[:12], ls.target, err)
	if resp == nil || (resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusConflict) {
		return // the engine did not answer: try again; the lease may still run
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.held[ls.target.Hash()]; ok && cur == ls {
		delete(l.held, ls.target.Hash())
		l.Notice("ferry: warning: deploy lock: lost the lock of %s (not renewed within %s: the engine was out of reach?); the next change to it takes it again", ls.target, l.TTL)
	}
}

// Release removes every lock and ticket of this job at once (cleanup,
// cancel, the runner's death: the holder's shutdown).
func (l *Locker) Release(ctx context.Context) {
	l.mu.Lock()
	l.released = true // no TakeEarly starts now
	l.mu.Unlock()
	// One under way ends first: its lock is released below.
	ran := make(chan struct{})
	go func() {
		l.earlyRun.Wait()
		close(ran)
	}()
	select {
	case <-ran:
	case <-ctx.Done():
	}
	l.mu.Lock()
	var all []*lease
	for _, ls := range l.held {
		all = append(all, ls)
	}
	tickets := l.tickets
	for _, ls := range l.tickets {
		all = append(all, ls)
	}
	l.released = true
	if l.spare != nil {
		tickets[l.spare.id] = l.spare // never started: removed like a ticket
		close(l.spare.started)
		all = append(all, l.spare)
		l.spare = nil
	}
	l.held, l.tickets = map[string]*lease{}, map[string]*lease{}
	if l.stop != nil && l.renewing {
		close(l.stop)
		l.renewing = false
	}
	for _, ls := range all {
		if ls.pending != nil && ls.pending.Stop() {
			// Never started: removed at once, like a ticket.
			close(ls.started)
			tickets[ls.id] = ls
		}
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, ls := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A lock whose start is under way: removing it first would
			// race the start (which then fails, harmlessly).
			select {
			case <-ls.started:
			case <-ctx.Done():
			}
			if _, isTicket := tickets[ls.id]; isTicket {
				l.remove(ctx, ls.id)
				return
			}
			// Renaming frees the name at once (a waiter's create can
			// win right away); SIGTERM ends the lease program and the
			// engine removes the container (AutoRemove). Neither waits
			// for the container to die, which takes the engine a few
			// hundred milliseconds (DELETE ?force, SIGKILL do wait).
			if _, err := l.do(ctx, http.MethodPost, "/containers/"+ls.id+"/rename?name=ferry-lockdone-"+ls.id[:20], nil, nil); err != nil {
				fmt.Fprintf(l.Log, "deploy lock: rename %s: %v\n", ls.id[:12], err)
			}
			if _, err := l.do(ctx, http.MethodPost, "/containers/"+ls.id+"/kill?signal=SIGTERM", nil, nil); err != nil {
				l.remove(ctx, ls.id) // never started: no lease program to end
			}
			fmt.Fprintf(l.Log, "deploy lock: released %s (%s)\n", ls.target, ls.id[:12])
		}()
	}
	wg.Wait()
}

// Held reports whether this job holds t's lock.
func (l *Locker) Held(t Target) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.held[t.Hash()]
	return ok
}

func (l *Locker) remove(ctx context.Context, id string) {
	l.do(ctx, http.MethodDelete, "/containers/"+id+"?force=1", nil, nil)
}

// loadImage loads the lease image into the engine (once per engine and
// TTL: later jobs find it there), after checking the engine can run it.
func (l *Locker) loadImage(ctx context.Context) error {
	var info struct {
		Architecture string
		OSType       string
	}
	if _, err := l.do(ctx, http.MethodGet, "/info", nil, &info); err != nil {
		return fmt.Errorf("ferry: deploy lock: %w", err)
	}
	if info.OSType != "linux" || (info.Architecture != "x86_64" && info.Architecture != "amd64") {
		l.mu.Lock()
		l.unavailable = fmt.Sprintf("the engine is %s/%s, the lock's lease program is linux/x86_64 only", info.OSType, info.Architecture)
		l.mu.Unlock()
		return errUnavailable
	}
	_, tarball := leaseImage(l.TTL)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://docker/images/load?quiet=1", bytes.NewReader(tarball))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := l.Client.Do(req)
	if err != nil {
		return fmt.Errorf("ferry: deploy lock: load the lease image: %w", err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || bytes.Contains(b, []byte(`"error"`)) {
		return fmt.Errorf("ferry: deploy lock: load the lease image: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	fmt.Fprintf(l.Log, "deploy lock: loaded %s (%d bytes)\n", l.image, len(tarball))
	return nil
}

// do sends one request; a non-2xx answer is an error (the response is
// returned with it, its body read).
func (l *Locker) do(ctx context.Context, method, path string, in, out any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := l.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var m struct{ Message string }
		if json.Unmarshal(b, &m) == nil && m.Message != "" {
			return resp, fmt.Errorf("%s: %s", resp.Status, m.Message)
		}
		return resp, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp, fmt.Errorf("%s %s: %w", method, path, err)
		}
	} else {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	}
	return resp, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
