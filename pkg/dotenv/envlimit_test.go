package dotenv

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestEnvStringLimitIsLinuxs checks MaxEnvString against the kernel: the
// longest string it allows starts a process, one byte more does not.
func TestEnvStringLimitIsLinuxs(t *testing.T) {
	start := func(key, value string) error {
		c := exec.Command("/bin/true")
		c.Env = []string{key + "=" + value}
		return c.Run()
	}
	fits := strings.Repeat("x", MaxEnvString-EnvSize("BIG", ""))
	if err := start("BIG", fits); err != nil {
		t.Fatalf("a %d-byte environment string did not start a process: %v", EnvSize("BIG", fits), err)
	}
	if err := start("BIG", fits+"x"); !errors.Is(err, syscall.E2BIG) {
		t.Fatalf("a %d-byte environment string: %v, want E2BIG", EnvSize("BIG", fits+"x"), err)
	}
}

func TestParseRefusesEnvTooLong(t *testing.T) {
	fits := strings.Repeat("v", MaxEnvString-EnvSize("BIG", ""))
	r, err := Parse("build.env", []byte("A=1\nBIG="+fits+"\n"), Options{})
	if err != nil || len(r.Map()["BIG"]) != len(fits) {
		t.Fatalf("value at the limit: %v", err)
	}
	_, err = Parse("build.env", []byte("A=1\nBIG="+fits+"v\nC=3\n"), Options{Lenient: true})
	var pe *Error
	if !errors.As(err, &pe) || pe.Line != 2 {
		t.Fatalf("err %v, want an *Error on line 2", err)
	}
	msg := err.Error()
	for _, want := range []string{"build.env:2: BIG:", fmt.Sprint(MaxEnvString + 1), "131072 bytes", "MAX_ARG_STRLEN"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "vvvv") || strings.Contains(msg, "\n") || len(msg) > 300 {
		t.Errorf("error quotes the value or is not one short line: %d bytes", len(msg))
	}
}

func TestParseRefusesEnvTotal(t *testing.T) {
	// Each value under the one-string limit, together over the budget.
	val := strings.Repeat("w", 100<<10)
	var b strings.Builder
	for i := range 11 {
		fmt.Fprintf(&b, "V%02d=%s\n", i, val)
	}
	_, err := Parse("big.env", []byte(b.String()), Options{})
	if err == nil || !strings.Contains(err.Error(), "big.env:11: V10:") || !strings.Contains(err.Error(), fmt.Sprint(MaxEnvTotal)) {
		t.Fatalf("err %v, want the line and key where the total passed %d", err, MaxEnvTotal)
	}
	// Ten of them fit.
	ten := strings.Join(strings.Split(b.String(), "\n")[:10], "\n")
	if _, err := Parse("big.env", []byte(ten), Options{}); err != nil {
		t.Fatal(err)
	}
}
