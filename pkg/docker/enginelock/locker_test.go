package enginelock

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
)

// remote is the harness's real dockerd (its own network namespace), set by
// engine.
var remote *dockertest.Remote

func TestMain(m *testing.M) {
	code := m.Run()
	dockertest.StopShared()
	os.Exit(code)
}

// engine is a client of the harness's real dockerd, on its socket.
func engine(tb testing.TB) *http.Client {
	tb.Helper()
	remote = dockertest.Shared(tb)
	sock := remote.DockerSock
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

type notes struct {
	mu    sync.Mutex
	lines []string
}

func (n *notes) add(f string, a ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lines = append(n.lines, fmt.Sprintf(f, a...))
}

func (n *notes) all() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.lines, "\n")
}

func newLocker(c *http.Client, who string, ttl time.Duration, n *notes) *Locker {
	return &Locker{Client: c, TTL: ttl, Holder: who, Deadline: time.Now().Add(time.Minute), Log: io.Discard, Notice: n.add}
}

// leases lists the target's lock and ticket containers on the engine.
func leases(t *testing.T, tg Target) string {
	t.Helper()
	out, err := remote.Docker("ps", "-a", "--filter", "name="+tg.LockName(), "--filter", "name="+tg.TicketPrefix(), "--format", `{{.Names}} {{.Label "`+LabelHolder+`"}}`)
	if err != nil {
		t.Fatal(err)
	}
	out = strings.ReplaceAll(out, tg.LockName()+" ", "lock ")
	out = regexp.MustCompile(regexp.QuoteMeta(tg.TicketPrefix())+`[0-9a-f]+ `).ReplaceAllString(out, "ticket ")
	return strings.TrimSpace(out)
}

// primed readies l's spare and waits for it.
func primed(t testing.TB, l *Locker) *Locker {
	t.Helper()
	l.Prime()
	for i := 0; ; i++ {
		l.mu.Lock()
		ok := l.spare != nil
		l.mu.Unlock()
		if ok {
			return l
		}
		if i > 400 {
			t.Fatal("no spare within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitNoLeases(t *testing.T, tg Target, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for leases(t, tg) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("leases of %s still there after %s: %s", tg, d, leases(t, tg))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLockerSerialisesFIFOAndReleases: A holds; B then C wait in order,
// each told who holds it and how many wait before it; A's release hands
// over to B at once, B's to C; nothing stays behind.
func TestLockerSerialisesFIFOAndReleases(t *testing.T) {
	c := engine(t)
	tg := Target{Kind: "compose project", Name: "fifo-" + randHex(3)}
	var na, nb, nc notes
	// A and C take by renaming their spare, B by creating.
	a := primed(t, newLocker(c, "team-a/web pipeline 1 job 11", 6*time.Second, &na))
	b := newLocker(c, "team-b/web pipeline 2 job 22", 6*time.Second, &nb)
	cc := primed(t, newLocker(c, "team-c/web pipeline 3 job 33", 6*time.Second, &nc))
	ctx := context.Background()
	// A's spare was created 3 s before the take: "since" is the take.
	time.Sleep(3 * time.Second)
	took := time.Now().UTC()
	if err := a.Acquire(ctx, tg, nil); err != nil {
		t.Fatal(err)
	}
	if got := leases(t, tg); !strings.HasPrefix(got, "lock team-a/web pipeline 1 job 11") {
		t.Fatalf("after A: %q", got)
	}
	order := make(chan string, 2)
	go func() {
		if err := b.Acquire(ctx, tg, nil); err != nil {
			t.Error(err)
		}
		order <- "b"
	}()
	for !strings.Contains(nb.all(), "held by") {
		time.Sleep(20 * time.Millisecond)
	}
	go func() {
		if err := cc.Acquire(ctx, tg, nil); err != nil {
			t.Error(err)
		}
		order <- "c"
	}()
	for !strings.Contains(nc.all(), "held by") {
		time.Sleep(20 * time.Millisecond)
	}
	if want := "ferry: deploy lock: " + tg.String() + " is held by team-a/web pipeline 1 job 11 since "; !strings.HasPrefix(nb.all(), want) || !strings.Contains(nb.all(), "; 0 job(s) wait before this one") {
		t.Fatalf("B's line: %q", nb.all())
	}
	if !strings.Contains(nc.all(), "; 1 job(s) wait before this one") {
		t.Fatalf("C's line: %q", nc.all())
	}
	since := regexp.MustCompile(`since (\d\d:\d\d:\d\d);`).FindStringSubmatch(nb.all())
	if since == nil {
		t.Fatalf("B's line has no since: %q", nb.all())
	}
	at, _ := time.Parse("15:04:05", since[1])
	day := func(t time.Time) time.Duration {
		return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second
	}
	if d := day(at) - day(took.Truncate(time.Second)); d < 0 || d > 2*time.Second {
		t.Fatalf("B's line says since %s; A took the lock at %s", since[1], took.Format("15:04:05.000"))
	}
	time.Sleep(2500 * time.Millisecond) // past a renewal: A still holds it
	if len(order) != 0 {
		t.Fatalf("%s got the lock while A held it", <-order)
	}
	t0 := time.Now()
	a.Release(ctx)
	if got := <-order; got != "b" {
		t.Fatalf("%s got the lock first, want b (first come)", got)
	}
	handoff := time.Since(t0)
	if handoff > time.Second {
		t.Errorf("handoff took %s", handoff)
	}
	t.Logf("handoff A -> B: %s", handoff)
	b.Release(ctx)
	if got := <-order; got != "c" {
		t.Fatal(got)
	}
	cc.Release(ctx)
	waitNoLeases(t, tg, 5*time.Second)
	// Released leases go as the engine removes them (AutoRemove).
	for i := 0; ; i++ {
		out := strings.TrimSpace(remote.MustDocker("ps", "-a", "--filter", "label="+LabelHolder+"=team-c/web pipeline 3 job 33", "--format", "{{.Names}}"))
		if out == "" {
			break
		}
		if i > 100 {
			t.Fatalf("C's containers left: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLockerExpiresAndCancel: a holder that stops renewing (its host lost)
// loses the lock within the TTL; a waiter whose ctx ends leaves no ticket.
func TestLockerExpiresAndCancel(t *testing.T) {
	c := engine(t)
	tg := Target{Kind: "stack", Name: "exp-" + randHex(3)}
	var na, nb notes
	ttl := 3 * time.Second
	a := primed(t, newLocker(c, "A", ttl, &na))
	b := newLocker(c, "B", ttl, &nb)
	if err := a.Acquire(context.Background(), tg, nil); err != nil {
		t.Fatal(err)
	}
	// Cancel while waiting.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Acquire(ctx, tg, nil) }()
	for !strings.Contains(nb.all(), "held by A") {
		time.Sleep(20 * time.Millisecond)
	}
	if got := leases(t, tg); !strings.Contains(got, "ticket B") {
		t.Fatalf("no ticket while waiting: %q", got)
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled wait returned nil")
	}
	if got := leases(t, tg); got != "lock A" {
		t.Fatalf("after the cancel: %q, want only A's lock", got)
	}
	// A vanishes: stop its renewals without releasing.
	a.mu.Lock()
	close(a.stop)
	a.renewing = false
	a.mu.Unlock()
	t0 := time.Now()
	if err := b.Acquire(context.Background(), tg, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > ttl+2*time.Second {
		t.Fatalf("took the lost holder's lock after %s, TTL %s", d, ttl)
	} else {
		t.Logf("lost holder's lock taken after %s (TTL %s)", d, ttl)
	}
	b.Release(context.Background())
	waitNoLeases(t, tg, 5*time.Second)
}

// TestLockerJobTimeout: a wait ends at the job's timeout with one line
// naming the holder, and leaves no ticket.
func TestLockerJobTimeout(t *testing.T) {
	c := engine(t)
	tg := Target{Kind: "compose project", Name: "timeout-" + randHex(3)}
	var na, nb notes
	a := newLocker(c, "team-a/web pipeline 1 job 11", 6*time.Second, &na)
	if err := a.Acquire(context.Background(), tg, nil); err != nil {
		t.Fatal(err)
	}
	defer a.Release(context.Background())
	b := newLocker(c, "B", 6*time.Second, &nb)
	b.Deadline = time.Now().Add(2 * time.Second)
	err := b.Acquire(context.Background(), tg, nil)
	if err == nil || err.Error() != "ferry: deploy lock: "+tg.String()+" still held by team-a/web pipeline 1 job 11 at the job's timeout" {
		t.Fatalf("wait past the job's timeout: %v", err)
	}
	if got := leases(t, tg); got != "lock team-a/web pipeline 1 job 11" {
		t.Fatalf("after the timeout: %q", got)
	}
}

// counting records the requests a client sends, "METHOD path" each.
type counting struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []string
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, r.Method+" "+r.URL.Path)
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *counting) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.reqs
	c.reqs = nil
	return r
}

// TestTakeEarly: TakeEarly (a deploy command's handshake) takes a free
// lock in the background, and the Acquire of the command's next request
// then sends nothing; an Acquire while it is under way waits for it
// instead of taking again. A lock held by another job is left alone: the
// waiter that queued first still gets it first. A Release while it is
// under way leaves nothing behind.
func TestTakeEarly(t *testing.T) {
	c := engine(t)
	cnt := &counting{next: c.Transport}
	c = &http.Client{Transport: cnt}
	ctx := context.Background()
	var n notes

	tg := Target{Kind: "compose project", Name: "early-" + randHex(3)}
	a := primed(t, newLocker(c, "A", 6*time.Second, &n))
	a.TakeEarly(tg)
	waitFor(t, func() bool { return a.Held(tg) })
	if got := leases(t, tg); got != "lock A" {
		t.Fatalf("after A's early take: %q", got)
	}
	cnt.take()
	if err := a.Acquire(ctx, tg, nil); err != nil {
		t.Fatal(err)
	}
	if got := cnt.take(); len(got) != 0 {
		t.Fatalf("Acquire after the early take sent %q, want nothing", got)
	}
	if !a.TakenEarly(tg) || a.TakenEarly(tg) {
		t.Fatal("TakenEarly: want true once")
	}

	// Held by A, W waits: N's early take does nothing; after A's
	// release W gets the lock before N.
	var nw, nn notes
	w := primed(t, newLocker(c, "W", 6*time.Second, &nw))
	nl := primed(t, newLocker(c, "N", 6*time.Second, &nn))
	order := make(chan string, 2)
	go func() {
		if err := w.Acquire(ctx, tg, nil); err != nil {
			t.Error(err)
		}
		order <- "W"
	}()
	for !strings.Contains(nw.all(), "held by A") {
		time.Sleep(20 * time.Millisecond)
	}
	nl.TakeEarly(tg)
	waitFor(t, func() bool { nl.mu.Lock(); defer nl.mu.Unlock(); return nl.taking[tg.Hash()] == nil })
	if got := strings.Split(leases(t, tg), "\n"); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"lock A", "ticket W"}) {
		t.Fatalf("N's early take while A holds and W waits: the engine has %q", got)
	}
	a.Release(ctx)
	go func() {
		if err := nl.Acquire(ctx, tg, nil); err != nil {
			t.Error(err)
		}
		order <- "N"
	}()
	if got := <-order; got != "W" {
		t.Fatalf("%s got the lock first, want W (it waited)", got)
	}
	w.Release(ctx)
	if got := <-order; got != "N" {
		t.Fatal(got)
	}
	nl.Release(ctx)

	// Acquire at once: one take (a list and a rename), not two.
	tg2 := Target{Kind: "stack", Name: "early-" + randHex(3)}
	s := primed(t, newLocker(c, "S", 6*time.Second, &n))
	cnt.take()
	s.TakeEarly(tg2)
	if err := s.Acquire(ctx, tg2, nil); err != nil {
		t.Fatal(err)
	}
	if got := cnt.take(); len(got) != 2 || got[0] != "GET /containers/json" || !strings.HasSuffix(got[1], "/rename") {
		t.Fatalf("TakeEarly and Acquire at once sent %q, want one list and one rename", got)
	}
	s.Release(ctx)

	// Acquire first (no spare: a create, tens of ms), TakeEarly while
	// it runs: one take, no ticket (a ticket would wait behind the
	// job's own lock until the job's timeout).
	tg4 := Target{Kind: "stack", Name: "early-" + randHex(3)}
	u := newLocker(c, "U", 6*time.Second, &n)
	u.Deadline = time.Now().Add(20 * time.Second)
	cnt.take()
	got := make(chan error, 1)
	go func() { got <- u.Acquire(ctx, tg4, nil) }()
	waitFor(t, func() bool { cnt.mu.Lock(); defer cnt.mu.Unlock(); return len(cnt.reqs) > 0 })
	u.TakeEarly(tg4)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Acquire with a TakeEarly during it: not done in 15 s; the engine has %q", leases(t, tg4))
	}
	if got := leases(t, tg4); got != "lock U" {
		t.Fatalf("Acquire with a TakeEarly during it: the engine has %q", got)
	}
	u.Release(ctx)

	// Released while under way: nothing stays.
	tg3 := Target{Kind: "stack", Name: "early-" + randHex(3)}
	r := primed(t, newLocker(c, "R", 6*time.Second, &n))
	r.TakeEarly(tg3)
	r.Release(ctx)
	waitNoLeases(t, tg, 5*time.Second)
	waitNoLeases(t, tg2, 5*time.Second)
	waitNoLeases(t, tg3, 5*time.Second)
	waitNoLeases(t, tg4, 5*time.Second)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not within 10 s")
		}
	}
}
