package sshdial_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest"
	"gitlab.com/ferry-ci/ferry/pkg/docker/sshdial"
)

func TestDecodeAndParseKey(t *testing.T) {
	pem, _ := dockertest.NewKey("")
	enc, _ := dockertest.NewKey("s3cret-pass")
	b64 := base64.StdEncoding.EncodeToString(pem)
	wrapped := ""
	for i := 0; i < len(b64); i += 76 {
		wrapped += b64[i:min(i+76, len(b64))] + "\n"
	}
	for _, tc := range []struct {
		name, value, pass string
		hasPass           bool
		want              string // "" = ok; else substring of the problem
		needsPass         bool
	}{
		{name: "pem", value: string(pem)},
		{name: "base64 one line", value: b64},
		{name: "base64 wrapped", value: wrapped},
		{name: "bad base64", value: "not*base64!", want: "nor valid base64"},
		{name: "not a key", value: base64.StdEncoding.EncodeToString([]byte("hello world, this is no key")), want: "not to a PEM private key"},
		{name: "empty", value: "  ", want: "is empty"},
		{name: "public key pem-ish", value: "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----", want: "not a usable private key"},
		{name: "encrypted without passphrase", value: string(enc), want: "protected by a passphrase", needsPass: true},
		{name: "encrypted wrong passphrase", value: string(enc), pass: "nope", hasPass: true, want: "wrong passphrase"},
		{name: "encrypted with passphrase", value: base64.StdEncoding.EncodeToString(enc), pass: "s3cret-pass", hasPass: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := sshdial.DecodeKey(tc.value)
			if err == nil {
				_, err = sshdial.ParseKey(p, []byte(tc.pass), tc.hasPass)
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			var kp *sshdial.KeyProblem
			if !errors.As(err, &kp) || kp.NeedsPassphrase != tc.needsPass {
				t.Fatalf("KeyProblem %+v, NeedsPassphrase want %v", kp, tc.needsPass)
			}
		})
	}
}

func TestKeySecrets(t *testing.T) {
	pem, _ := dockertest.NewKey("")
	s := sshdial.KeySecrets(pem)
	lines := strings.Split(strings.TrimSpace(string(pem)), "\n")
	if len(s) != len(lines)-2 { // body lines (not BEGIN/END)
		t.Fatalf("got %d secrets for %d PEM lines", len(s), len(lines))
	}
	for _, l := range lines[1 : len(lines)-1] {
		found := false
		for _, x := range s {
			found = found || x == l
		}
		if !found {
			t.Fatalf("body line %q not a secret", l)
		}
	}
}

func TestParseURL(t *testing.T) {
	for in, want := range map[string]string{
		"ssh://deploy@host":                  "ssh://deploy@host:22",
		"ssh://deploy@host:2222":             "ssh://deploy@host:2222",
		"ssh://deploy@[::1]:2222/run/d.sock": "ssh://deploy@[::1]:2222/run/d.sock",
	} {
		got, err := sshdial.ParseURL(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseURL(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"tcp://host:2375", "ssh://host", "ssh://u:pw@host", "ssh://u@host:99999", "ssh://u@host/x;rm -rf", "ssh://u@"} {
		if _, err := sshdial.ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		}
	}
}
