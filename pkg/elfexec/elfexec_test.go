package elfexec

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestWrapRuns: the wrapped code runs as a program of its own (exit_group
// with a code the test picks), and its data is reachable RIP-relative from
// Base+HeaderSize (write(1, msg, len)).
func TestWrapRuns(t *testing.T) {
	msg := []byte("elfexec\n")
	code := []byte{
		0xb8, 1, 0, 0, 0, // mov eax, 1 (write)
		0xbf, 1, 0, 0, 0, // mov edi, 1
		0x48, 0x8d, 0x35, 0, 0, 0, 0, // lea rsi, [rip+msg]
		0xba, byte(len(msg)), 0, 0, 0, // mov edx, len
		0x0f, 0x05, // syscall
		0xb8, 231, 0, 0, 0, // mov eax, 231 (exit_group)
		0xbf, 7, 0, 0, 0, // mov edi, 7
		0x0f, 0x05, // syscall
	}
	rel := len(code) - 17 // msg follows the code; the lea's rel32 ends at offset 17
	code[13] = byte(rel)
	code = append(code, msg...)
	p := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(p, Wrap(code), 0o500); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p).Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("want exit 7, got %v", err)
	}
	if string(out) != string(msg) {
		t.Fatalf("output %q, want %q", out, msg)
	}
}
