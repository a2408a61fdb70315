package redact

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand"
	"os"
	"testing"
)

// benchSecrets are 50 secrets shaped like the real ones: service account
// tokens and base64 blobs.
func benchSecrets() []string {
	r := rand.New(rand.NewSource(7))
	var s []string
	for i := 0; i < 50; i++ {
		b := make([]byte, 24+r.Intn(24))
		r.Read(b)
		s = append(s, base64.RawURLEncoding.EncodeToString(b))
	}
	return s
}

// benchLog is a 1 MiB job log: ordinary lines with a secret now and then.
func benchLog(secrets []string) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < 1<<20; i++ {
		fmt.Fprintf(&b, "deployment.apps/shark-app-%d configured in namespace example (step %d)\n", i%97, i)
		if i%200 == 0 {
			fmt.Fprintf(&b, "token: %s\n", secrets[i%len(secrets)])
		}
	}
	return b.Bytes()[:1<<20]
}

// sink copies what it is given, so both benchmarks pay for moving the bytes
// and only the masking work differs. It is the worst case for the redactor:
// a memcpy is far cheaper than ferry's real sink (see benchPipe).
type sink struct{ buf []byte }

func (s *sink) Write(p []byte) (int, error) {
	s.buf = append(s.buf[:0], p...)
	return len(p), nil
}

func benchWrite(b *testing.B, chunk int, wrap func(io.Writer) io.WriteCloser) {
	data := benchLog(benchSecrets())
	out := &sink{buf: make([]byte, 0, 1<<20)}
	// One Writer per job, like ferry run: building it is not per chunk.
	w := wrap(out)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := 0; off < len(data); off += chunk {
			end := min(off+chunk, len(data))
			w.Write(data[off:end])
		}
		w.Close()
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func BenchmarkIOCopy(b *testing.B) {
	for _, chunk := range []int{1 << 20, 1} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) {
			benchWrite(b, chunk, func(w io.Writer) io.WriteCloser { return nopCloser{w} })
		})
	}
}

func BenchmarkRedact(b *testing.B) {
	secrets := AllVariants(benchSecrets()...)[:50]
	for _, chunk := range []int{1 << 20, 1} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) {
			benchWrite(b, chunk, func(w io.Writer) io.WriteCloser { return NewWriter(w, secrets) })
		})
	}
}

// benchPipe is benchWrite into ferry's real sink: an os.Pipe whose other end
// a goroutine drains in 32 KiB reads, as the runner reads ferry's stdout
// (os/exec copies a child's output with io.Copy's 32 KiB buffer).
func benchPipe(b *testing.B, chunk int, wrap func(io.Writer) io.WriteCloser) {
	data := benchLog(benchSecrets())
	r, pw, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	w := wrap(pw)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := 0; off < len(data); off += chunk {
			end := min(off+chunk, len(data))
			if _, err := w.Write(data[off:end]); err != nil {
				b.Fatal(err)
			}
		}
		w.Close()
	}
	b.StopTimer()
	pw.Close()
	<-done
	r.Close()
}

// The pipe pair: 1-byte writes are one write(2) each, so they take about a
// second per op.
func BenchmarkIOCopyPipe(b *testing.B) {
	for _, chunk := range []int{1 << 20, 1} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) {
			benchPipe(b, chunk, func(w io.Writer) io.WriteCloser { return nopCloser{w} })
		})
	}
}

func BenchmarkRedactPipe(b *testing.B) {
	secrets := AllVariants(benchSecrets()...)[:50]
	for _, chunk := range []int{1 << 20, 1} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) {
			benchPipe(b, chunk, func(w io.Writer) io.WriteCloser { return NewWriter(w, secrets) })
		})
	}
}

// BenchmarkLongSecret compiles a 5 MB secret (the red team's masked
// variable) and masks one occurrence of it in a 10 MB log: what every stage
// of such a job pays. BenchmarkLongSecretFloor only copies the same log:
// the floor, side by side.
func BenchmarkLongSecret(b *testing.B) {
	secret, log := longSecretLog()
	b.SetBytes(int64(len(log)))
	for i := 0; i < b.N; i++ {
		var out bytes.Buffer
		w := NewWriter(&out, Variants(secret))
		w.Write(log)
		w.Close()
		if bytes.Contains(out.Bytes(), []byte(secret[:64])) {
			b.Fatal("secret left in the output")
		}
	}
}

func BenchmarkLongSecretFloor(b *testing.B) {
	_, log := longSecretLog()
	b.SetBytes(int64(len(log)))
	for i := 0; i < b.N; i++ {
		var out bytes.Buffer
		out.Write(log)
	}
}

func longSecretLog() (string, []byte) {
	raw := make([]byte, 5<<20*3/4)
	rand.New(rand.NewSource(1)).Read(raw)
	secret := base64.StdEncoding.EncodeToString(raw)
	log := bytes.Repeat([]byte("ordinary log line, nothing to see here 0123456789\n"), 5<<20/50)
	return secret, append(append(log, secret...), log...)
}
