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
	matchLen []int32 // longest secret ending in this state, 0 if none
	// live is the length of the longest suffix of the text read so far that
	// is a proper prefix of some secret and so may still become (part of) a
	// match: that many trailing bytes must be held back.
	live   []int32
	maxLen int
	// fast is the dense table: for a dense state s and class c,
	// fast[s*nclass+c] is the next state premultiplied by nclass (its row
	// offset), or -next-1 when the next state has a match or is deep.
	fast   []int32
	ndense int32 // states 0..ndense-1 are dense (have a row in fast)
	// The deep states' trie: the children of s are the states first[s] ..
	// first[s+1]-1, label[k] is the class of the edge into k, and fail[k]
	// is k's failure link (kept for every state; only deep ones use it).
	first []int32
	label []uint8
	fail  []int32
	// Skip filter: while the automaton is at most one byte deep, no match
	// can start at j unless buf[j:j+2] begins some secret (or buf[j] does, at
	// the end of buf). Checking that needs no automaton step, and the loads
	// are independent of each other, so it runs several times faster than
	// the automaton through ordinary log text.
	skip      bool
	shallow   int32 // states 0..shallow-1 are the root and depth-1 states
	firstByte [256]bool
	pair      [65536]bool
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

// Dense and deep states. A dense row costs nclass entries, so making every
// state dense would make a long secret (a 5 MB masked variable has five
// million states) cost gigabytes and most of a minute to compile, in every
// stage. Only the states near the root are dense: they are the ones ordinary
// text visits, and run's fast path needs. The deeper ones, reached only while
// the text repeats more than maxDenseDepth bytes of a secret, keep the plain
// Aho-Corasick form: their trie children (numbered consecutively, so one
// index each) and a failure link. Compiling and memory are then linear in the
// secrets' total length with a small constant (about 40 bytes a byte while
// compiling, 17 after), and so is the scan: each failure step leads to a
// shallower state.
var (
	// maxDenseDepth: states deeper than this are sparse.
	maxDenseDepth int32 = 64
	// maxDenseEntries caps the dense table (4 bytes an entry), however
	// many secrets there are; the root and depth-1 states are always dense.
	maxDenseEntries = 4 << 20
)

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
	nc := m.nclass
	// The bare trie, children in sibling lists (-1 ends a list), sized for
	// the worst case (no shared prefixes) so that nothing grows by copying.
	total := 1
	for _, p := range patterns {
		total += len(p)
	}
	firstChild := append(make([]int32, 0, total), -1)
	sibling := append(make([]int32, 0, total), -1)
	edge := append(make([]uint8, 0, total), 0)
	end := append(make([]int32, 0, total), 0)
	for _, p := range patterns {
		s := int32(0)
		for i := 0; i < len(p); i++ {
			c := m.class[p[i]]
			t := firstChild[s]
			for t >= 0 && edge[t] != c {
				t = sibling[t]
			}
			if t < 0 {
				t = int32(len(edge))
				firstChild = append(firstChild, -1)
				sibling = append(sibling, firstChild[s])
				edge = append(edge, c)
				end = append(end, 0)
				firstChild[s] = t
			}
			s = t
		}
		end[s] = max(end[s], int32(len(p)))
	}
	n := int32(len(edge))
	// Breadth-first, numbering the states in the order they are reached:
	// the root and the states one byte deep come first (run tells them
	// apart by number), a failure link always points to a lower number,
	// and the children of a state have consecutive numbers.
	node := make([]int32, 1, n) // state -> trie node
	depth := make([]int32, 1, n)
	m.matchLen = make([]int32, n)
	m.live = make([]int32, n)
	m.fail = make([]int32, 1, n)
	m.label = make([]uint8, 1, n)
	m.first = make([]int32, 0, n+1)
	var dense []int32 // rows of the dense states so far; plain state numbers
	m.ndense = n
	for s := int32(0); s < n; s++ {
		o, f := node[s], m.fail[s]
		if m.ndense == n && depth[s] > 1 && (depth[s] > maxDenseDepth || int(s+1)*int(nc) > maxDenseEntries) {
			m.ndense = s // this one and all after it are deep
		}
		m.matchLen[s] = end[o]
		if end[o] == 0 {
			// A state's own match is longer than any on its failure chain.
			m.matchLen[s] = m.matchLen[f]
		}
		if firstChild[o] >= 0 {
			m.live[s] = depth[s]
		} else {
			m.live[s] = m.live[f]
		}
		m.first = append(m.first, int32(len(node)))
		for t := firstChild[o]; t >= 0; t = sibling[t] {
			c := edge[t]
			ft := int32(0)
			if s > 0 {
				ft = m.build(dense, f, c)
			}
			node = append(node, t)
			depth = append(depth, depth[s]+1)
			m.fail = append(m.fail, ft)
			m.label = append(m.label, c)
		}
		if s < m.ndense {
			// The trie edges, else the failure state's row.
			row := len(dense)
			if s == 0 {
				dense = append(dense, make([]int32, nc)...)
			} else {
				dense = append(dense, dense[f*nc:f*nc+nc]...)
			}
			for k := m.first[s]; k < int32(len(node)); k++ {
				dense[row+int(m.label[k])] = k
			}
		}
	}
	m.first = append(m.first, n)
	for s := int32(0); s < n && depth[s] <= 1; s++ {
		m.shallow = s + 1
	}
	// run leaves its fast path for a state with a match or a deep one.
	m.fast = make([]int32, len(dense))
	for i, t := range dense {
		m.fast[i] = t * nc
		if m.matchLen[t] > 0 || t >= m.ndense {
			m.fast[i] = -t - 1
		}
	}
	// The skip filter is exact only if every secret has at least 2 bytes.
	m.skip = true
	for _, p := range patterns {
		if len(p) < 2 {
			m.skip = false
		}
		m.firstByte[p[0]] = true
		m.pair[int(p[0])<<8|int(p[1%len(p)])] = true
	}
	m.buildStride(patterns)
	return m
}

// build is the transition from s on class c while newMatcher numbers the
// states: dense holds the rows of the dense states so far, and everything
// sparse needs is known for the states before the one being numbered.
func (m *matcher) build(dense []int32, s int32, c uint8) int32 {
	s, ok := m.sparse(s, c, int32(len(dense)/int(m.nclass)))
	if ok {
		return s
	}
	return dense[s*m.nclass+int32(c)]
}

// sparse follows deep states (numbers from ndense on): it returns the child
// on class c of s or of the first state on its failure chain that has one
// (true), or else the first dense state on that chain (false), whose row
// then gives the transition.
func (m *matcher) sparse(s int32, c uint8, ndense int32) (int32, bool) {
	for s >= ndense {
		for k := m.first[s]; k < m.first[s+1]; k++ {
			if m.label[k] == c {
				return k, true
			}
		}
		s = m.fail[s]
	}
	return s, false
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

// next is one automaton step, for the paths outside run.
func (m *matcher) next(s int32, b byte) int32 {
	c := m.class[b]
	s, ok := m.sparse(s, c, m.ndense)
	if ok {
		return s
	}
	t := m.fast[s*m.nclass+int32(c)]
	if t < 0 {
		return -t - 1
	}
	return t / m.nclass
}

// run feeds buf[i:] to the automaton from state s and stops before the first
// byte that leads to a state with a match or a deep one (returning that
// byte's index and the state before it), or at len(buf). It is the Writer's inner loop, so it uses
// the premultiplied table (one dependent load per byte) and the skip filter.
func (m *matcher) run(buf []byte, i int, s int32) (int, int32) {
	if s >= m.ndense {
		return i, s // a deep state: scan steps through with next
	}
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
	if i == n-1 && m.firstByte[buf[i]] {
		return i
	}
	return n
}
