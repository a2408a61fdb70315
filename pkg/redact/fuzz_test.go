package redact

import (
	"math/rand"
	"strings"
	"testing"
)

// FuzzRedact: for any input, secrets (joined by NUL) and split points (from
// seed), the Writer's output equals the whole-input reference, in 1-byte
// writes too, and no secret is left in it.
func FuzzRedact(f *testing.F) {
	f.Add([]byte("token=abcdef123456\n"), "abcdef123456", int64(1))
	f.Add([]byte("aaaaaaaaaa"), "aaa\x00aaaa", int64(2))
	f.Add([]byte("apiVersion: v1\nkind: Config\n"), "apiVersion: v1\nkind: Config\x00kind", int64(3))
	f.Fuzz(func(t *testing.T, input []byte, joined string, seed int64) {
		secrets := strings.Split(joined, "\x00")
		if len(secrets) > 64 {
			secrets = secrets[:64]
		}
		want := reference(string(input), secrets)
		r := rand.New(rand.NewSource(seed))
		sizes := make([]int, 1+r.Intn(8))
		for i := range sizes {
			sizes[i] = 1 + r.Intn(1+len(input))
		}
		for _, sz := range [][]int{sizes, {1}} {
			got := redactChunks(t, string(input), secrets, sz)
			if got != want {
				t.Fatalf("sizes %v: got %q, want %q", sz, got, want)
			}
			for _, s := range secrets {
				// A secret sharing bytes with the mask could be formed
				// across a mask boundary; only check the others.
				if s != "" && !strings.ContainsAny(s, Mask) && strings.Contains(got, s) {
					t.Fatalf("secret %q left in output %q", s, got)
				}
			}
		}
	})
}
