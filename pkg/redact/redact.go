// Package redact masks secrets in a byte stream, such as a job's output on its
// way to the GitLab job log.
//
// Semantics: the output equals replacing, in the whole stream at once, every
// leftmost-longest occurrence of a secret with "[MASKED]" (scan left to right;
// at the first position where any secret matches, replace the longest one and
// continue after it). How the stream is cut into writes makes no difference.
//
// Streaming: the Writer holds back only the trailing bytes that are still a
// prefix of some secret (so at most longest-secret-1 bytes) and writes
// everything else before Write returns. A complete line is therefore never
// held back unless its end could be the beginning of a secret that contains a
// newline; secrets without a newline never delay a line. Close writes what is
// still held back.
package redact

import (
	"encoding/base64"
	"io"
	"sort"
	"sync"
)

// Mask is what every occurrence of a secret is replaced with.
const Mask = "[MASKED]"

// MinVariantLen is the shortest value Variants returns. Shorter strings would
// mask ordinary words and numbers all over the log (GitLab itself refuses to
// mask values under 8 characters); a secret that short is not worth hiding.
const MinVariantLen = 6

// maxKeep is the largest buffer a Writer keeps between writes.
const maxKeep = 4 << 20

// MaxEncodedLen is the longest secret Variants encodes. A ServiceAccount
// token (about 1 KiB) and an RSA private key in PEM (about 1.7 KiB) fit.
const MaxEncodedLen = 2048

// Writer is an io.WriteCloser that masks secrets in everything written to it
// before passing it on. It is safe for concurrent use.
type Writer struct {
	mu    sync.Mutex
	w     io.Writer
	m     *matcher // nil when there is nothing to mask
	buf   []byte   // held-back bytes, then the bytes of the current Write
	state int32    // automaton state after the last byte of buf
	// bestStart/bestEnd locate, in buf, the leftmost-longest match found but
	// not yet settled (a longer one may still grow); -1 when there is none.
	bestStart, bestEnd int
	out                []byte // scratch for masked output, reused between writes
	err                error  // first error of w: sticky
}

// NewWriter returns a Writer masking secrets (empty strings are ignored) in
// what it passes on to w. Pass the output of Variants for each secret to also
// catch its encoded forms.
func NewWriter(w io.Writer, secrets []string) *Writer {
	seen := make(map[string]bool, len(secrets))
	var pats []string
	for _, s := range secrets {
		if s != "" && !seen[s] {
			seen[s] = true
			pats = append(pats, s)
		}
	}
	rw := &Writer{w: w, bestStart: -1, bestEnd: -1}
	if len(pats) > 0 {
		rw.m = newMatcher(pats)
	}
	return rw
}

// Write masks p and writes all of it that can no longer be part of a secret.
// It returns len(p) unless the underlying writer failed.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.m == nil {
		if _, err := w.w.Write(p); err != nil {
			w.err = err
			return 0, err
		}
		return len(p), nil
	}
	scanFrom := len(w.buf)
	w.buf = append(w.buf, p...)
	if err := w.scan(scanFrom, false); err != nil {
		w.err = err
		return 0, err
	}
	return len(p), nil
}

// scan feeds buf[from:] to the automaton, writes masked output for everything
// that is settled and keeps the rest in buf. With final set, the stream ends
// after buf: nothing is held back.
func (w *Writer) scan(from int, final bool) error {
	m := w.m
	buf := w.buf
	s := w.state
	bestStart, bestEnd := w.bestStart, w.bestEnd
	emitted := 0 // buf[:emitted] has been dealt with
	// out collects output only once something is masked; until then the
	// settled part of buf is written as is, without a copy.
	out := w.out[:0]
	masked := false
	for i := from; ; i++ {
		if bestStart < 0 {
			// Hot path: nothing pending, run until a state with a match.
			i, s = m.run(buf, i, s)
		}
		settle := false
		if i == len(buf) {
			if !final || bestStart < 0 {
				break
			}
			settle = true // end of stream: the pending match cannot grow
		} else {
			s = m.next(s, buf[i])
			if ml := m.matchLen[s]; ml > 0 {
				// After a restart from the root every match found starts at
				// or after emitted, so the longest one ending here is the
				// leftmost.
				start := i + 1 - int(ml)
				if bestStart < 0 || start < bestStart || (start == bestStart && i+1 > bestEnd) {
					bestStart, bestEnd = start, i+1
				}
			}
			// The match is settled once nothing still growing starts at or
			// before it: no earlier match and no longer one can appear.
			settle = bestStart >= 0 && i+1-int(m.live[s]) > bestStart
		}
		if settle {
			masked = true
			out = append(out, buf[emitted:bestStart]...)
			out = append(out, Mask...)
			emitted = bestEnd
			// Restart from the root right after the match: bytes read past
			// it may begin the next match.
			i = bestEnd - 1
			s = 0
			bestStart, bestEnd = -1, -1
		}
	}
	// Everything before the still-growing suffix is settled; a pending
	// match starts inside that suffix, so it is kept too.
	safe := len(buf) - int(m.live[s])
	if final {
		safe = len(buf)
	}
	if safe < emitted {
		safe = emitted
	}
	if masked {
		out = append(out, buf[emitted:safe]...)
	} else {
		out = buf[emitted:safe]
	}
	if len(out) > 0 {
		if _, err := w.w.Write(out); err != nil {
			return err
		}
	}
	n := copy(buf, buf[safe:])
	w.buf = buf[:n]
	w.state = s
	if bestStart >= 0 {
		bestStart, bestEnd = bestStart-safe, bestEnd-safe
	}
	w.bestStart, w.bestEnd = bestStart, bestEnd
	// Keep the buffers for the next write, but not huge ones.
	if masked && cap(out) <= maxKeep {
		w.out = out[:0]
	}
	if cap(w.buf) > maxKeep {
		w.buf = append([]byte(nil), w.buf...)
	}
	return nil
}

// Close writes what is still held back, masking any secret in it. It does not
// close the underlying writer. The Writer can be used again after Close.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.m == nil {
		return nil
	}
	if err := w.scan(len(w.buf), true); err != nil {
		w.err = err
		return err
	}
	w.state = 0
	return nil
}

// Variants returns secret and its encoded forms that can show up in a log:
// standard and URL-safe base64, padded and unpadded, and the part of its
// base64 that is the same wherever the secret sits inside a longer base64
// text (the secret starting 1 or 2 bytes into a 3-byte group: that is how a
// token inside a base64 kubeconfig is encoded). Values shorter than
// MinVariantLen are left out, so a short secret yields nothing. The result has
// no duplicates, longest first.
//
// A secret longer than MaxEncodedLen is returned alone: such values are whole
// documents (a kubeconfig, its base64 form) whose credentials are registered
// as secrets of their own, and each encoded form would add kilobytes of
// states to every Writer.
func Variants(secret string) []string {
	if secret == "" {
		return nil
	}
	if len(secret) > MaxEncodedLen {
		return []string{secret}
	}
	seen := map[string]bool{}
	var out []string
	add := func(v string) {
		if len(v) >= MinVariantLen && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	add(secret)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		add(enc.EncodeToString([]byte(secret)))
		raw := enc.WithPadding(base64.NoPadding)
		add(raw.EncodeToString([]byte(secret)))
		for shift := 1; shift <= 2; shift++ {
			// Encode behind `shift` filler bytes, then drop the characters
			// that carry filler bits (2 for one byte, 3 for two) and the last
			// character if it also carries bits of whatever follows.
			b := make([]byte, shift+len(secret))
			copy(b[shift:], secret)
			e := raw.EncodeToString(b)
			e = e[shift+1:]
			if (shift+len(secret))%3 != 0 {
				e = e[:len(e)-1]
			}
			add(e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// AllVariants is Variants for each secret, concatenated without duplicates.
func AllVariants(secrets ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range secrets {
		for _, v := range Variants(s) {
			if !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
}
