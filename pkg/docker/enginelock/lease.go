package enginelock

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/elfexec"
)

// The lease program: the PID 1 of every lock and ticket container. It
// blocks SIGUSR1 and SIGTERM and waits for them with rt_sigtimedwait,
// the TTL as the timeout: SIGUSR1 (the holder's renewal, `POST
// /containers/<id>/kill?signal=SIGUSR1`) waits again, anything else (the
// TTL passed without a renewal, SIGTERM) exits, and the engine removes the
// container (AutoRemove). Blocked signals are never dropped by the kernel,
// not even for a PID namespace's init, so no handler is needed.
//
// Why hand-made machine code and not ferry's own binary: ferry embeds its
// engine (tens of megabytes) and the image is loaded over the job's SSH
// connection to every engine a lock is taken on; these 200 bytes do the
// whole job, with no libc, no runtime, no file, no network. The TTL is in
// the program (its timespec), so each TTL is its own image tag.
//
// x86-64 only: an engine of another architecture gets no lock, with one
// warning line (Locker.ensureImage).
//
//	mov  eax, 14            ; rt_sigprocmask(SIG_BLOCK, &set, NULL, 8)
//	xor  edi, edi
//	lea  rsi, [rip+set]
//	xor  edx, edx
//	mov  r10d, 8
//	syscall
//	loop:
//	mov  eax, 128           ; rt_sigtimedwait(&set, NULL, &ts, 8)
//	lea  rdi, [rip+set]
//	xor  esi, esi
//	lea  rdx, [rip+ts]
//	mov  r10d, 8
//	syscall
//	cmp  eax, 10            ; SIGUSR1: renewed
//	je   loop
//	mov  eax, 231           ; exit_group(0)
//	xor  edi, edi
//	syscall
//	set: dq 1<<9 | 1<<14    ; SIGUSR1 (10), SIGTERM (15)
//	ts:  dq ttl, 0
func leaseProgram(ttl time.Duration) []byte {
	var code []byte
	emit := func(b ...byte) { code = append(code, b...) }
	var fix []struct {
		at     int    // offset of the rel32 in code
		target string // "set" or "ts"
	}
	rel := func(target string) {
		fix = append(fix, struct {
			at     int
			target string
		}{len(code), target})
		emit(0, 0, 0, 0)
	}
	emit(0xb8, 14, 0, 0, 0)            // mov eax, 14
	emit(0x31, 0xff)                   // xor edi, edi
	emit(0x48, 0x8d, 0x35)             // lea rsi, [rip+set]
	rel("set")                         //
	emit(0x31, 0xd2)                   // xor edx, edx
	emit(0x41, 0xba, 8, 0, 0, 0)       // mov r10d, 8
	emit(0x0f, 0x05)                   // syscall
	loop := len(code)                  //
	emit(0xb8, 128, 0, 0, 0)           // mov eax, 128
	emit(0x48, 0x8d, 0x3d)             // lea rdi, [rip+set]
	rel("set")                         //
	emit(0x31, 0xf6)                   // xor esi, esi
	emit(0x48, 0x8d, 0x15)             // lea rdx, [rip+ts]
	rel("ts")                          //
	emit(0x41, 0xba, 8, 0, 0, 0)       // mov r10d, 8
	emit(0x0f, 0x05)                   // syscall
	emit(0x83, 0xf8, 10)               // cmp eax, 10
	emit(0x74, byte(loop-len(code)-2)) // je loop
	emit(0xb8, 231, 0, 0, 0)           // mov eax, 231
	emit(0x31, 0xff)                   // xor edi, edi
	emit(0x0f, 0x05)                   // syscall
	for len(code)%8 != 0 {
		emit(0xcc)
	}
	data := map[string]int{"set": len(code)}
	code = binary.LittleEndian.AppendUint64(code, 1<<9|1<<14)
	data["ts"] = len(code)
	secs := int64(ttl / time.Second)
	nanos := int64(ttl % time.Second)
	code = binary.LittleEndian.AppendUint64(code, uint64(secs))
	code = binary.LittleEndian.AppendUint64(code, uint64(nanos))
	for _, f := range fix {
		binary.LittleEndian.PutUint32(code[f.at:], uint32(int32(data[f.target]-(f.at+4))))
	}

	return elfexec.Wrap(code)
}

// leaseImage is the image tarball (the `docker save` layout POST
// /images/load takes): one layer with /lease, and its tag.
func leaseImage(ttl time.Duration) (tag string, tarball []byte) {
	prog := leaseProgram(ttl)
	var layer bytes.Buffer
	lt := tar.NewWriter(&layer)
	lt.WriteHeader(&tar.Header{Name: "lease", Mode: 0o555, Size: int64(len(prog)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
	lt.Write(prog)
	lt.Close()
	diff := sha256.Sum256(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      "1970-01-01T00:00:00Z",
		"config": map[string]any{
			"Entrypoint": []string{"/lease"},
			"Labels":     map[string]string{"org.opencontainers.image.title": "ferry deploy lock lease (docs/deploy-safety.md)"},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diff[:])}},
	})
	cfgSum := sha256.Sum256(cfg)
	tag = fmt.Sprintf("%s:%s", ImageRepo, hex.EncodeToString(cfgSum[:])[:12])
	manifest, _ := json.Marshal([]map[string]any{{
		"Config":   "config.json",
		"RepoTags": []string{tag},
		"Layers":   []string{"layer/layer.tar"},
	}})
	var out bytes.Buffer
	t := tar.NewWriter(&out)
	file := func(name string, body []byte) {
		t.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		t.Write(body)
	}
	t.WriteHeader(&tar.Header{Name: "layer/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)})
	file("layer/layer.tar", layer.Bytes())
	file("config.json", cfg)
	file("manifest.json", manifest)
	t.Close()
	return tag, out.Bytes()
}
