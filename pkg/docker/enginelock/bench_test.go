package enginelock

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkLockFree: what the lock adds to a job when its target is free:
// the take (one list, the rename of the job's spare; the lease starts a
// third of the lease later), the take without a spare (take-create-ms: a
// create), and the release (a remove of the never-started lock: in the
// job's holder after cleanup has returned, so not on the job's path; what
// a waiting job waits for), against the harness's real
// dockerd on its socket (a job's holder adds its SSH channel per request).
// The one-time load of the lease image is reported as load-ms.
func BenchmarkLockFree(b *testing.B) {
	c := engine(b)
	ttl := 15 * time.Second
	tag, _ := leaseImage(ttl)
	remote.Docker("rmi", "-f", tag)
	ctx := context.Background()
	var n notes
	l := newLocker(c, "bench", ttl, &n)
	t0 := time.Now()
	l.image = tag
	if err := l.loadImage(ctx); err != nil {
		b.Fatal(err)
	}
	load := time.Since(t0)
	var take, release time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// The holder readies its spare at the job's first use of the
		// engine, long before a deploy takes the lock.
		l := primed(b, newLocker(c, "bench", ttl, &n))
		b.StartTimer()
		tg := Target{Kind: "compose project", Name: "bench-" + randHex(4)}
		t0 := time.Now()
		if err := l.Acquire(ctx, tg, nil); err != nil {
			b.Fatal(err)
		}
		take += time.Since(t0)
		// A seed deploy ends before the lease's start is due (a third
		// of the lease): cleanup removes a lock that never ran.
		t1 := time.Now()
		l.Release(ctx)
		release += time.Since(t1)
	}
	b.ReportMetric(float64(take.Microseconds())/1000/float64(b.N), "take-ms")
	b.ReportMetric(float64(load.Microseconds())/1000, "load-ms") // once per engine, not per job
	var create time.Duration
	for i := 0; i < b.N; i++ {
		l := newLocker(c, "bench", ttl, &n)
		tg := Target{Kind: "compose project", Name: "bench-" + randHex(4)}
		t0 := time.Now()
		if err := l.Acquire(ctx, tg, nil); err != nil {
			b.Fatal(err)
		}
		create += time.Since(t0)
		l.Release(ctx)
	}
	b.ReportMetric(float64(create.Microseconds())/1000/float64(b.N), "take-create-ms")
	b.ReportMetric(float64(release.Microseconds())/1000/float64(b.N), "release-ms")
}

// BenchmarkLockHandoff: a job waits for the lock; the holder releases it
// (cleanup); the time until the waiter holds it.
func BenchmarkLockHandoff(b *testing.B) {
	c := engine(b)
	ctx := context.Background()
	var n notes
	var total time.Duration
	for i := 0; i < b.N; i++ {
		tg := Target{Kind: "compose project", Name: "handoff-" + randHex(4)}
		// Both primed, as their holders are by the time they deploy.
		a, w := primed(b, newLocker(c, "A", 15*time.Second, &n)), primed(b, newLocker(c, "W", 15*time.Second, &n))
		w.Log = io.Discard
		if err := a.Acquire(ctx, tg, nil); err != nil {
			b.Fatal(err)
		}
		got := make(chan time.Time, 1)
		go func() {
			if err := w.Acquire(ctx, tg, nil); err != nil {
				b.Error(err)
			}
			got <- time.Now()
		}()
		// Queued: its ticket runs.
		for {
			st, err := a.list(ctx, tg)
			if err != nil {
				b.Fatal(err)
			}
			if len(st.live) == 1 && st.live[0].State == "running" {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // the waiter is in its wait
		t0 := time.Now()
		a.Release(ctx)
		total += (<-got).Sub(t0)
		w.Release(ctx)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "handoff-ms")
}
