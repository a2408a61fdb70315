package dotenvstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/dotenv"
)

// BenchmarkDirPutGet50Concurrent: 50 concurrent jobs each storing and
// reading back a seed-sized report (what one producer's upload stage and
// one consumer's prepare cost the store). ns/op is per Put+Get pair.
func BenchmarkDirPutGet50Concurrent(b *testing.B) {
	s, _ := NewDir(b.TempDir())
	ctx := context.Background()
	var next atomic.Int64
	r := &Report{Files: []string{"docker.env"}, Vars: []dotenv.Var{{Key: "IMAGE", Value: "registry.example.com/group/shark-app:90eedc04"}},
		Expires: time.Now().Add(time.Hour)}
	b.SetParallelism(25) // x GOMAXPROCS(2) = 50 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := next.Add(1)
			k := Key{ServerURL: "https://gitlab.example.com", ProjectID: 1, PipelineID: id / 2, JobID: id}
			rr := *r
			if err := s.Put(ctx, k, &rr); err != nil {
				b.Error(err)
				return
			}
			if _, err := s.Get(ctx, k); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkDirGet: a consumer's read of one report of n variables.
func BenchmarkDirGet(b *testing.B) {
	for _, n := range []int{1, 50, 500} {
		b.Run(fmt.Sprintf("vars=%d", n), func(b *testing.B) {
			s, _ := NewDir(b.TempDir())
			ctx := context.Background()
			r := &Report{}
			for i := 0; i < n; i++ {
				r.Vars = append(r.Vars, dotenv.Var{Key: fmt.Sprintf("VAR_%03d", i), Value: "registry.example.com/group/app:90eedc04"})
			}
			k := Key{ServerURL: "https://gitlab.example.com", JobID: 1}
			if err := s.Put(ctx, k, r); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Get(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
