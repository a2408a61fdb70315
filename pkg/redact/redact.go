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

var mask = []byte(Mask)

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
	held  []byte   // bytes held back: they may still be (part of) a match
	state int32    // automaton state after the last byte of held
	// bestStart/bestEnd locate, in held, the leftmost-longest match found
	// but not yet settled (a longer one may still grow); -1 when there is
	// none.
	bestStart, bestEnd int
	// out gathers short pieces of output (masks, the text between close
	// secrets, bytes released from held) so that they reach w in one Write;
	// long runs of text go to w straight from the caller's slice.
	out  []byte
	next []byte // a piece of output not yet copied to out: see emit
	err  error  // first error of w: sticky
}

const (
	// directMin is the shortest run of text written to w straight from the
	// caller's slice rather than copied into out first. Below it, another
	// Write to w (a syscall for a pipe) costs more than the copy.
	directMin = 64 << 10
	// outFlush bounds out: past it, out is written to w.
	outFlush = 64 << 10
)

// Set is a compiled set of secrets; one Set serves any number of Writers
// (ferry's stdout and stderr share one), so the automaton is built once.
type Set struct {
	m *matcher // nil when there is nothing to mask; read-only once built
}

// NewSet compiles secrets (empty strings are ignored). Pass the output of
// Variants for each secret to also catch its encoded forms.
func NewSet(secrets []string) *Set {
	seen := make(map[string]bool, len(secrets))
	var pats []string
	for _, s := range secrets {
		if s != "" && !seen[s] {
			seen[s] = true
			pats = append(pats, s)
		}
	}
	if len(pats) == 0 {
		return &Set{}
	}
	return &Set{m: newMatcher(pats)}
}

// Writer returns a Writer masking the set's secrets in what it passes on to w.
func (s *Set) Writer(w io.Writer) *Writer {
	return &Writer{w: w, m: s.m, bestStart: -1, bestEnd: -1}
}

// NewWriter returns a Writer masking secrets in what it passes on to w:
// NewSet(secrets).Writer(w).
func NewWriter(w io.Writer, secrets []string) *Writer {
	return NewSet(secrets).Writer(w)
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
	if err := w.write(p); err != nil {
		w.err = err
		return 0, err
	}
	return len(p), nil
}

func (w *Writer) write(p []byte) error {
	if len(w.held) == 0 {
		// Nothing held back (so no pending match either): scan p where it
		// is, without copying it.
		i, s := w.m.run(p, 0, w.state)
		w.state = s
		if i == len(p) && w.m.live[s] == 0 {
			// The common case, and all there is to a 1-byte write of
			// ordinary text: no match and nothing to hold back.
			_, err := w.w.Write(p)
			return err
		}
		safe, err := w.scan(p, i, 0, false)
		if err != nil {
			return err
		}
		w.keep(p[safe:])
		return w.flush()
	}
	// Join the held bytes with the start of p, long enough that whatever
	// is still held back afterwards lies in p; scan the rest of p in place.
	old := len(w.held)
	k := min(len(p), w.m.maxLen)
	w.held = append(w.held, p[:k]...)
	safe, err := w.scan(w.held, old, 0, false)
	if err == nil {
		err = w.gather() // held changes below: copy what refers to it
	}
	if err != nil {
		return err
	}
	if k == len(p) {
		n := copy(w.held, w.held[safe:])
		w.held = w.held[:n]
		return w.flush()
	}
	// held[safe:] is p[safe-old:k]: at most maxLen-1 bytes, so safe > old.
	// bestStart/bestEnd are relative to it either way.
	from := safe - old
	w.held = w.held[:0]
	safe, err = w.scan(p, k, from, false)
	if err != nil {
		return err
	}
	w.keep(p[safe:])
	return w.flush()
}

// keep makes b (which does not alias held) the held-back bytes.
func (w *Writer) keep(b []byte) {
	w.held = append(w.held[:0], b...)
	if cap(w.held) > maxKeep {
		w.held = append([]byte(nil), w.held...)
	}
}

// emit passes b on. A piece that would be written alone is written from
// where it is, without a copy; pieces next to each other are gathered in
// out, except long ones (see directMin). b must stay valid until the next
// emit or flush.
func (w *Writer) emit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if len(w.out) == 0 && w.next == nil {
		w.next = b
		return nil
	}
	if err := w.gather(); err != nil {
		return err
	}
	if len(b) >= directMin {
		if err := w.flush(); err != nil {
			return err
		}
		w.next = b
		return nil
	}
	w.out = append(w.out, b...)
	if len(w.out) >= outFlush {
		return w.flush()
	}
	return nil
}

// gather moves the piece waiting in next into out, or writes it if it is
// long.
func (w *Writer) gather() error {
	b := w.next
	if b == nil {
		return nil
	}
	w.next = nil
	if len(b) >= directMin {
		_, err := w.w.Write(b)
		return err
	}
	w.out = append(w.out, b...)
	return nil
}

// flush writes what emit has been given so far.
func (w *Writer) flush() error {
	if b := w.next; b != nil {
		w.next = nil
		// out is empty: emit fills next only then, and gather empties it
		// before out grows.
		_, err := w.w.Write(b)
		return err
	}
	if len(w.out) == 0 {
		return nil
	}
	_, err := w.w.Write(w.out)
	w.out = w.out[:0]
	if cap(w.out) > maxKeep {
		w.out = nil
	}
	return err
}

// scan feeds buf[from:] to the automaton, whose state (w.state) is that
// after buf[:from]. buf[:emitted] has been dealt with already, and the
// pending match (w.bestStart/End) is relative to buf[emitted:]. It emits
// every settled byte and returns safe: buf[safe:] must be held back, and the
// pending match is then relative to it. With final set, the stream ends after
// buf: nothing is held back.
func (w *Writer) scan(buf []byte, from, emitted int, final bool) (int, error) {
	m := w.m
	s := w.state
	bestStart, bestEnd := w.bestStart, w.bestEnd
	if bestStart >= 0 {
		bestStart, bestEnd = bestStart+emitted, bestEnd+emitted
	}
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
			if err := w.emit(buf[emitted:bestStart]); err != nil {
				return 0, err
			}
			if err := w.emit(mask); err != nil {
				return 0, err
			}
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
	if err := w.emit(buf[emitted:safe]); err != nil {
		return 0, err
	}
	w.state = s
	if bestStart >= 0 {
		bestStart, bestEnd = bestStart-safe, bestEnd-safe
	}
	w.bestStart, w.bestEnd = bestStart, bestEnd
	return safe, nil
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
	_, err := w.scan(w.held, len(w.held), 0, true)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		w.err = err
		return err
	}
	w.held = w.held[:0]
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
