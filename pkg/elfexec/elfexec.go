// Package elfexec makes the smallest static Linux x86-64 executable there
// is: an ELF header, one program header and the caller's machine code, all
// loaded read+execute at one address, entered at the code's first byte.
//
// ferry emits two such programs by hand, where a process must do a few
// system calls and nothing else, faster or smaller than any Go program
// could: the deploy lock's lease (pkg/docker/enginelock, PID 1 of a
// container, ~200 bytes) and the private /tmp's enter program (pkg/tmpns,
// setns and execve from the job's sandbox, ~660 bytes). Their code must be
// position independent (RIP-relative data), which this package does not
// check: it only wraps.
package elfexec

import (
	"bytes"
	"encoding/binary"
)

// Base is the address the file is loaded at.
const Base = 0x400000

// HeaderSize is the ELF header and the program header: the code starts this
// far into the file (and at Base+HeaderSize in memory).
const HeaderSize = 64 + 56

// Wrap returns code as an executable file (to write 0500 or load in an
// image).
func Wrap(code []byte) []byte {
	size := uint64(HeaderSize + len(code))
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // 64-bit, little endian, SysV
	w(uint16(2))                                                             // ET_EXEC
	w(uint16(62))                                                            // EM_X86_64
	w(uint32(1))                                                             // EV_CURRENT
	w(uint64(Base + HeaderSize))                                             // entry
	w(uint64(64))                                                            // phoff
	w(uint64(0))                                                             // shoff
	w(uint32(0))                                                             // flags
	w(uint16(64))                                                            // ehsize
	w(uint16(56))                                                            // phentsize
	w(uint16(1))                                                             // phnum
	w(uint16(0))                                                             // shentsize
	w(uint16(0))                                                             // shnum
	w(uint16(0))                                                             // shstrndx
	// PT_LOAD, R+X, the whole file at Base.
	w(uint32(1))      // PT_LOAD
	w(uint32(5))      // PF_R|PF_X
	w(uint64(0))      // offset
	w(uint64(Base))   // vaddr
	w(uint64(Base))   // paddr
	w(size)           // filesz
	w(size)           // memsz
	w(uint64(0x1000)) // align
	b.Write(code)
	return b.Bytes()
}
