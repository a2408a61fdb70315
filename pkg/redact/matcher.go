package redact

import "encoding/binary"

// matcher is an Aho-Corasick automaton compiled to a dense DFA over byte
// classes. It is hand-written rather than imported: the Writer needs two
// things general-purpose libraries do not expose — the automaton state between
// writes (to catch a secret split across writes without re-scanning) and, per
// state, how many trailing bytes could still grow into a match (to hold back as
// little as possible). The whole thing is ~100 lines.
//
// Byte classes keep the table small: all bytes that occur in no secret share
// one class, so 50 base64 secrets of 40 bytes need about 2000 states x ~65
// classes x 4 bytes, which stays in L2 cache.
type matcher struct {
	class    [256]uint8 // byte -> class
	nclass   int32
	delta    []int32 // state*nclass + class -> next state (failure links folded in); nil once built
	matchLen []int32 // longest secret ending in this state, 0 if none
	// live is the length of the longest suffix of the text read so far that
	// is a proper prefix of some secret and so may still become (part of) a
	// match: that many trailing bytes must be held back.
	live   []int32
	maxLen int
	// fast is delta premultiplied by nclass (the row offset of the next
	// state), negative (-offset-1) when the next state has a match.
	fast []int32
	// Skip filter: while the automaton is at most one byte deep, no match
	// can start at j unless buf[j:j+2] begins some secret (or buf[j] does, at
	// the end of buf). Checking that needs no automaton step, and the loads
	// are independent of each other, so it runs several times faster than
	// the automaton through ordinary log text.
	skip    bool
	shallow int32 // states 0..shallow-1 are the root and depth-1 states
	first   [256]bool
	pair    [65536]bool
	// Stride filter (a q-gram filter in the manner of Wu-Manber): every
	// secret is at least win bytes long, so a match starting at j covers
	// the 4-byte blocks ending at j+3 .. j+win-1. block holds (hashed) every
	// such block of every secret's first win bytes. Looking at one block in
	// every stride = win-3 positions is then enough: a block that is in no
	// secret rules out every start whose window holds it. The probes are
	// independent of each other, so on ordinary text this reads one 4-byte
	// block per ~win bytes instead of every byte. 0 when off.
	stride int
	win    int
	block  *[blockWords]uint64
}

// The block filter is a blocked Bloom filter: a block's hash picks one
// 64-bit word and two bits in it, so one load tests both. 16 KiB, to stay in
// L1 cache.
const (
	blockWords = 2048
	blockBits  = blockWords * 64
	// maxBlocksSet keeps the filter sparse (under 1 bit in 16 set), or it
	// would pass most text and cost more than it saves.
	maxBlocksSet = blockBits / 32
	// minWin is the shortest window worth a stride filter (stride 2).
	minWin = 5
)

// blockHash hashes block u: its top 11 bits pick the word, the next two
// 6-bit fields the bits in it.
func blockHash(u uint32) uint64 { return uint64(u) * 0x9E3779B97F4A7C15 }

func newMatcher(patterns []string) *matcher {
	m := &matcher{}
	// Byte classes: class 0 is "in no pattern".
	var used [256]bool
	for _, p := range patterns {
		for i := 0; i < len(p); i++ {
			used[p[i]] = true
		}
		if len(p) > m.maxLen {
			m.maxLen = len(p)
		}
	}
	m.nclass = 1
	for b := 0; b < 256; b++ {
		if used[b] {
			m.class[b] = uint8(m.nclass)
			m.nclass++
		}
	}
	// Trie. Before the failure links are folded in, -1 means "no edge".
	nc := m.nclass
	newState := func() int32 {
		for i := int32(0); i < nc; i++ {
			m.delta = append(m.delta, -1)
		}
		m.matchLen = append(m.matchLen, 0)
		m.live = append(m.live, 0)
		return int32(len(m.matchLen) - 1)
	}
	depth := []int32{0}
	newState()
	for _, p := range patterns {
		s := int32(0)
		for i := 0; i < len(p); i++ {
			c := int32(m.class[p[i]])
			next := m.delta[s*nc+c]
			if next < 0 {
				next = newState()
				depth = append(depth, depth[s]+1)
				m.delta[s*nc+c] = next
			}
			s = next
		}
		if int32(len(p)) > m.matchLen[s] {
			m.matchLen[s] = int32(len(p))
		}
	}
	// hasChild must be computed on the bare trie, before edges are folded.
	hasChild := make([]bool, len(m.matchLen))
	for s := range hasChild {
		for c := int32(0); c < nc; c++ {
			if m.delta[int32(s)*nc+c] >= 0 {
				hasChild[s] = true
				break
			}
		}
	}
	// Breadth-first: failure links, inherited outputs, folded transitions.
	fail := make([]int32, len(m.matchLen))
	queue := make([]int32, 0, len(m.matchLen))
	order := []int32{0} // states in breadth-first order
	for c := int32(0); c < nc; c++ {
		if t := m.delta[c]; t < 0 {
			m.delta[c] = 0
		} else {
			fail[t] = 0
			queue = append(queue, t)
		}
	}
	if hasChild[0] {
		m.live[0] = 0
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		order = append(order, s)
		f := fail[s]
		// A state's own match is longer than anything on its failure chain.
		if m.matchLen[s] == 0 {
			m.matchLen[s] = m.matchLen[f]
		}
		if hasChild[s] {
			m.live[s] = depth[s]
		} else {
			m.live[s] = m.live[f]
		}
		for c := int32(0); c < nc; c++ {
			t := m.delta[s*nc+c]
			if t < 0 {
				m.delta[s*nc+c] = m.delta[f*nc+c]
				continue
			}
			fail[t] = m.delta[f*nc+c]
			queue = append(queue, t)
		}
	}
	m.renumber(order, depth)
	m.fast = make([]int32, len(m.delta))
	for i, t := range m.delta {
		m.fast[i] = t * nc
		if m.matchLen[t] > 0 {
			m.fast[i] = -t*nc - 1
		}
	}
	m.delta = nil // only fast is used from here on: half the memory
	// The skip filter is exact only if every secret has at least 2 bytes.
	m.skip = true
	for _, p := range patterns {
		if len(p) < 2 {
			m.skip = false
		}
		m.first[p[0]] = true
		m.pair[int(p[0])<<8|int(p[1%len(p)])] = true
	}
	m.buildStride(patterns)
	return m
}

// buildStride sets up the stride filter, with a window as long as the
// shortest secret allows, narrowed while the filter would be too dense.
func (m *matcher) buildStride(patterns []string) {
	if !m.skip {
		return
	}
	win := m.maxLen
	for _, p := range patterns {
		win = min(win, len(p))
	}
	win = min(win, 64) // past this, longer strides gain little
	for ; win >= minWin && len(patterns)*(win-3) > maxBlocksSet; win-- {
	}
	if win < minWin {
		return
	}
	m.win, m.stride = win, win-3
	m.block = new([blockWords]uint64)
	for _, p := range patterns {
		for q := 3; q < win; q++ {
			h := blockHash(binary.LittleEndian.Uint32([]byte(p[q-3 : q+1])))
			m.block[h>>53] |= 1<<(h>>47&63) | 1<<(h>>41&63)
		}
	}
}

// renumber puts the states in breadth-first order, so that the root and the
// states one byte deep are 0..shallow-1 and run can tell them apart cheaply.
func (m *matcher) renumber(order, depth []int32) {
	nc := m.nclass
	perm := make([]int32, len(order))
	for n, old := range order {
		perm[old] = int32(n)
		if depth[old] <= 1 {
			m.shallow = int32(n) + 1
		}
	}
	delta := make([]int32, len(m.delta))
	matchLen := make([]int32, len(m.matchLen))
	live := make([]int32, len(m.live))
	for old, n := range perm {
		for c := int32(0); c < nc; c++ {
			delta[n*nc+c] = perm[m.delta[int32(old)*nc+c]]
		}
		matchLen[n] = m.matchLen[old]
		live[n] = m.live[old]
	}
	m.delta, m.matchLen, m.live = delta, matchLen, live
}

// next is one automaton step, for the paths outside run.
func (m *matcher) next(s int32, b byte) int32 {
	t := m.fast[s*m.nclass+int32(m.class[b])]
	if t < 0 {
		t = -t - 1
	}
	return t / m.nclass
}

// run feeds buf[i:] to the automaton from state s and stops before the first
// byte that leads to a state with a match (returning that byte's index and the
// state before it), or at len(buf). It is the Writer's inner loop, so it uses
// the premultiplied table (one dependent load per byte) and the skip filter.
func (m *matcher) run(buf []byte, i int, s int32) (int, int32) {
	fast, class, nc := m.fast, &m.class, m.nclass
	low := m.shallow * nc
	v := s * nc
	for i < len(buf) {
		if m.skip && v < low && !(v != 0 && m.pair[int(buf[i-1])<<8|int(buf[i])]) {
			// Nothing read so far can grow into a match (the state is
			// the root, or one byte deep with that byte and this one
			// beginning no secret): jump to the next possible start.
			j := m.nextStart(buf, i)
			if j > i {
				i, v = j, 0
				if i == len(buf) {
					break
				}
			}
		}
		t := fast[v+int32(class[buf[i]])]
		if t < 0 {
			return i, v / nc
		}
		v = t
		i++
	}
	return i, v / nc
}

// nextStart returns the first j >= i where a secret may start: buf[j:j+2] is
// the beginning of a secret, or j is the last byte and begins one. It returns
// len(buf) if there is none.
func (m *matcher) nextStart(buf []byte, i int) int {
	n := len(buf)
	if m.stride > 0 {
		win, stride, block := m.win, m.stride, m.block
		// The block ending at e is the last of the window starting at
		// e-win+1 and the first of the one starting at e-3: probing e
		// covers the starts e-win+1 .. e-win+stride.
		e := i + win - 1
		for e < n {
			h := blockHash(binary.LittleEndian.Uint32(buf[e-3 : e+1]))
			if b := block[h>>53]; b&(1<<(h>>47&63)) != 0 && b&(1<<(h>>41&63)) != 0 {
				for j, end := e-win+1, e-win+1+stride; j < end; j++ {
					if m.pair[int(buf[j])<<8|int(buf[j+1])] {
						return j
					}
				}
			}
			e += stride
		}
		// The windows left do not fit in buf: check their starts one by
		// one (a secret may begin at the end and continue in the next
		// write).
		i = max(i, e-win+1)
	}
	for ; i+1 < n; i++ {
		if m.pair[int(buf[i])<<8|int(buf[i+1])] {
			return i
		}
	}
	if i == n-1 && m.first[buf[i]] {
		return i
	}
	return n
}
