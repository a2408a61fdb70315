package redact

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// reference is the definition the Writer must match: replace leftmost-longest
// occurrences in the whole input at once. strings.Replacer picks, at the
// leftmost position, the first old string in argument order, so the secrets
// are passed longest first.
func reference(input string, secrets []string) string {
	var s []string
	seen := map[string]bool{}
	for _, x := range secrets {
		if x != "" && !seen[x] {
			seen[x] = true
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return input
	}
	sort.SliceStable(s, func(i, j int) bool { return len(s[i]) > len(s[j]) })
	var pairs []string
	for _, x := range s {
		pairs = append(pairs, x, Mask)
	}
	return strings.NewReplacer(pairs...).Replace(input)
}

// redactChunks writes input to a Writer in the given chunk sizes (cycled).
func redactChunks(t testing.TB, input string, secrets []string, sizes []int) string {
	t.Helper()
	var out bytes.Buffer
	w := NewWriter(&out, secrets)
	for i, k := 0, 0; i < len(input); k++ {
		n := 1
		if len(sizes) > 0 {
			n = sizes[k%len(sizes)]
		}
		if n <= 0 {
			n = 1
		}
		if i+n > len(input) {
			n = len(input) - i
		}
		if m, err := w.Write([]byte(input[i : i+n])); err != nil || m != n {
			t.Fatalf("Write = %d, %v; want %d, nil", m, err, n)
		}
		i += n
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestRedactCases(t *testing.T) {
	cases := []struct {
		name    string
		input   string
		secrets []string
		want    string
	}{
		{"none", "hello world\n", nil, "hello world\n"},
		{"one", "token=s3cr3t-value!\n", []string{"s3cr3t-value"}, "token=[MASKED]!\n"},
		{"twice adjacent", "abcdefabcdef", []string{"abcdef"}, "[MASKED][MASKED]"},
		{"longest wins at same start", "xx abcdefgh yy", []string{"abcdef", "abcdefgh"}, "xx [MASKED] yy"},
		{"leftmost wins over longer later", "abcdefghij", []string{"cdefghij", "abcdef"}, "[MASKED]ghij"},
		{"prefix then divergence", "abcdeX abcdef", []string{"abcdef"}, "abcdeX [MASKED]"},
		{"shorter complete, longer pending at end", "key abc", []string{"abc", "abcdef"}, "key [MASKED]"},
		{"overlap restart", "aaaaaaa", []string{"aaa"}, "[MASKED][MASKED]a"},
		{"multiline secret", "a\nb\nline1\nline2\nc", []string{"line1\nline2"}, "a\nb\n[MASKED]\nc"},
		{"empty secret ignored", "abc", []string{""}, "abc"},
		{"binary", "\x00\xff\x00secret\xff", []string{"\xff\x00secret"}, "\x00[MASKED]\xff"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if ref := reference(c.input, c.secrets); ref != c.want {
				t.Fatalf("reference = %q, want %q (test case is wrong)", ref, c.want)
			}
			for _, sizes := range [][]int{{1 << 20}, {1}, {2}, {3, 1, 4}} {
				if got := redactChunks(t, c.input, c.secrets, sizes); got != c.want {
					t.Errorf("chunks %v: got %q, want %q", sizes, got, c.want)
				}
			}
		})
	}
}

// TestRedactRandom compares the Writer with the reference on many random
// inputs drawn from a small alphabet, so secrets overlap and repeat a lot.
func TestRedactRandom(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "ab\nc"[r.Intn(4)]
		}
		return string(b)
	}
	for iter := 0; iter < 3000; iter++ {
		var secrets []string
		for k := r.Intn(5); k >= 0; k-- {
			secrets = append(secrets, word(1+r.Intn(6)))
		}
		input := word(r.Intn(80))
		sizes := []int{1 + r.Intn(7), 1 + r.Intn(3), 1 + r.Intn(40)}
		want := reference(input, secrets)
		if got := redactChunks(t, input, secrets, sizes); got != want {
			t.Fatalf("input %q secrets %q sizes %v:\n got %q\nwant %q", input, secrets, sizes, got, want)
		}
	}
}

// TestRedactStreamsLines checks the job log keeps streaming: after a complete
// line, nothing is held back unless that line's end may begin a secret.
func TestRedactStreamsLines(t *testing.T) {
	var out bytes.Buffer
	secret := "glpat-0123456789abcdef"
	w := NewWriter(&out, []string{secret})
	io.WriteString(w, "step 1 done\n")
	if out.String() != "step 1 done\n" {
		t.Fatalf("after a complete line, written %q", out.String())
	}
	io.WriteString(w, "token glpat-01")
	if got := out.String(); got != "step 1 done\ntoken " {
		t.Fatalf("held back wrongly: %q", got)
	}
	io.WriteString(w, "23456789abcdef and more\n")
	if got := out.String(); got != "step 1 done\ntoken [MASKED] and more\n" {
		t.Fatalf("got %q", got)
	}
	// A secret prefix that turns out not to be one is released at once.
	io.WriteString(w, "glpat-\n")
	if got := out.String(); !strings.HasSuffix(got, "glpat-\n") {
		t.Fatalf("prefix not released: %q", got)
	}
}

func TestHoldBackBound(t *testing.T) {
	secrets := []string{"0123456789", "abcdefghijklmnop"}
	var out bytes.Buffer
	w := NewWriter(&out, secrets)
	written := 0
	for _, b := range []byte("abcdefghijklmno") { // a 15-byte prefix of the longest secret
		w.Write([]byte{b})
		written++
		if held := written - out.Len(); held > 15 {
			t.Fatalf("holding %d bytes, more than longest-1", held)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("a live prefix was released: %q", out.String())
	}
	w.Close()
	if out.String() != "abcdefghijklmno" {
		t.Fatalf("Close wrote %q", out.String())
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestWriterErrorIsSticky(t *testing.T) {
	w := NewWriter(&failWriter{n: 1}, []string{"secret-value"})
	if _, err := w.Write([]byte("line one\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("line two\n")); err == nil {
		t.Fatal("want error from the underlying writer")
	}
	if _, err := w.Write([]byte("x\n")); err == nil {
		t.Fatal("error must be sticky")
	}
}

func TestVariants(t *testing.T) {
	secret := "eyJhbGciOiJSUzI1NiJ9.tok3n"
	v := Variants(secret)
	want := []string{
		secret,
		base64.StdEncoding.EncodeToString([]byte(secret)),
		base64.RawStdEncoding.EncodeToString([]byte(secret)),
		base64.URLEncoding.EncodeToString([]byte(secret)),
		base64.RawURLEncoding.EncodeToString([]byte(secret)),
	}
	has := map[string]bool{}
	for _, x := range v {
		has[x] = true
		if len(x) < MinVariantLen {
			t.Errorf("variant %q shorter than %d", x, MinVariantLen)
		}
	}
	for _, x := range want {
		if !has[x] {
			t.Errorf("Variants lacks %q", x)
		}
	}
	if len(has) != len(v) {
		t.Errorf("duplicates in %q", v)
	}
	long := strings.Repeat("k", MaxEncodedLen+1)
	if got := Variants(long); len(got) != 1 || got[0] != long {
		t.Errorf("Variants(long) has %d values, want the secret alone", len(got))
	}
	if got := Variants("abc"); len(got) != 0 {
		t.Errorf("Variants(short) = %q, want none", got)
	}
}

// TestVariantsCatchEmbeddedBase64 shows why Variants includes the shifted
// forms: a token inside a base64 kubeconfig is encoded at any of 3 offsets.
func TestVariantsCatchEmbeddedBase64(t *testing.T) {
	token := "sa-token-0123456789-abcdefghijkl"
	for prefix := 0; prefix < 6; prefix++ {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
			doc := strings.Repeat("x", prefix) + "users:\n- token: " + token + "\n"
			line := enc.EncodeToString([]byte(doc))
			got := redactChunks(t, "KUBECONFIG="+line+"\n", Variants(token), []int{7})
			if !strings.Contains(got, Mask) {
				t.Errorf("prefix %d: token inside base64 not masked: %s", prefix, got)
			}
			dec, _ := enc.DecodeString(line)
			if !strings.Contains(string(dec), token) {
				t.Fatal("test is wrong")
			}
		}
	}
}

func TestNoSecretsPassesThrough(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out, nil)
	fmt.Fprint(w, "abc")
	if out.String() != "abc" {
		t.Fatal(out.String())
	}
}

// TestRedactRandomLong is TestRedactRandom with secrets long enough for the
// stride filter (every secret at least minWin bytes) and inputs long enough
// for it to skip: secrets are planted at random places, whole or cut short,
// in text from an alphabet they share.
func TestRedactRandomLong(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	word := func(n int, alphabet string) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[r.Intn(len(alphabet))]
		}
		return string(b)
	}
	for iter := 0; iter < 2000; iter++ {
		alphabet := []string{"ab", "abc\n", "abcdefghijklmnopqrstuvwxyz0123456789+/=\n "}[iter%3]
		var secrets []string
		for k := r.Intn(6); k >= 0; k-- {
			secrets = append(secrets, word(minWin+r.Intn(40), alphabet))
		}
		var in strings.Builder
		for in.Len() < 50+r.Intn(3000) {
			in.WriteString(word(r.Intn(120), alphabet))
			s := secrets[r.Intn(len(secrets))]
			if r.Intn(3) == 0 {
				s = s[:r.Intn(len(s))]
			}
			in.WriteString(s)
		}
		input := in.String()
		sizes := []int{1 + r.Intn(7), 1 + r.Intn(300), 1 + r.Intn(4000)}
		want := reference(input, secrets)
		if got := redactChunks(t, input, secrets, sizes); got != want {
			t.Fatalf("input %q secrets %q sizes %v:\n got %q\nwant %q", input, secrets, sizes, got, want)
		}
		if got := redactChunks(t, input, secrets, []int{1 << 20}); got != want {
			t.Fatalf("input %q secrets %q in one write:\n got %q\nwant %q", input, secrets, got, want)
		}
	}
}

// TestStrideFilterOn makes sure the benchmark's secrets take the stride path
// (and TestRedactRandomLong tests it).
func TestStrideFilterOn(t *testing.T) {
	if m := NewWriter(io.Discard, AllVariants(benchSecrets()...)[:50]).m; m.stride == 0 {
		t.Fatal("stride filter off for 50 base64 secrets")
	}
	if m := NewWriter(io.Discard, []string{"abcdefgh"}).m; m.stride != len("abcdefgh")-3 {
		t.Fatalf("stride %d for one 8-byte secret", m.stride)
	}
}

// One Set serves ferry's stdout and stderr at once: its automaton is shared
// read-only, each Writer keeps its own state.
func TestSetSharedByConcurrentWriters(t *testing.T) {
	set := NewSet(AllVariants("s3cr3t-value", "another-secret"))
	var a, b strings.Builder
	wa, wb := set.Writer(&a), set.Writer(&b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000; i++ {
			wa.Write([]byte("x s3cr"))
			wa.Write([]byte("3t-value y\n"))
		}
		wa.Close()
	}()
	for i := 0; i < 1000; i++ {
		wb.Write([]byte("another-"))
		wb.Write([]byte("secret z\n"))
	}
	wb.Close()
	<-done
	if got, want := a.String(), strings.Repeat("x "+Mask+" y\n", 1000); got != want {
		t.Errorf("writer a: %q...", got[:40])
	}
	if got, want := b.String(), strings.Repeat(Mask+" z\n", 1000); got != want {
		t.Errorf("writer b: %q...", got[:40])
	}
}

// TestRedactDeepStates runs the random comparisons again with almost every
// state deep (sparse children and failure links instead of dense rows), as
// a long secret's states are past maxDenseDepth: the two forms must match
// the same text.
func TestRedactDeepStates(t *testing.T) {
	defer func(d int32, e int) { maxDenseDepth, maxDenseEntries = d, e }(maxDenseDepth, maxDenseEntries)
	for _, lim := range []struct {
		depth   int32
		entries int
	}{{1, 1 << 20}, {2, 1 << 20}, {5, 1 << 20}, {64, 64}} {
		maxDenseDepth, maxDenseEntries = lim.depth, lim.entries
		t.Run(fmt.Sprintf("depth%d-entries%d", lim.depth, lim.entries), func(t *testing.T) {
			if m := newMatcher([]string{"abcdefghijklmnop"}); m.ndense >= int32(len(m.matchLen)) {
				t.Fatalf("all %d states dense", m.ndense)
			}
			TestRedactCases(t)
			TestRedactRandom(t)
			TestRedactRandomLong(t)
		})
	}
}

// A long secret compiles in time and memory linear in its length: a dense
// row for each of its states would take 64 classes x 4 bytes a byte (1.3 GB
// and most of a minute for the 5 MB of the red team's masked variable).
func TestLongSecretIsLinear(t *testing.T) {
	raw := make([]byte, 3<<20)
	rand.New(rand.NewSource(3)).Read(raw)
	secret := base64.StdEncoding.EncodeToString(raw) // 4 MiB
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	set := NewSet(Variants(secret))
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64*uint64(len(secret)) {
		t.Errorf("compiling a %d-byte secret allocated %d bytes (%d a byte); want linear with a small constant", len(secret), alloc, alloc/uint64(len(secret)))
	}
	if n := len(set.m.fast); n > maxDenseEntries+256*256 {
		t.Errorf("dense table of %d entries for one secret", n)
	}
	var out strings.Builder
	w := set.Writer(&out)
	io.WriteString(w, "a "+secret[:len(secret)/2]+" b "+secret+" c "+secret[1:]+"\n")
	w.Close()
	if want := "a " + secret[:len(secret)/2] + " b " + Mask + " c " + secret[1:] + "\n"; out.String() != want {
		t.Errorf("long secret not masked exactly (output %d bytes, want %d)", out.Len(), len(want))
	}
}
