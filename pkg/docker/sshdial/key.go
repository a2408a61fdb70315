package sshdial

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// KeyProblem is why a private key could not be used. The caller names the
// variable; the message says what is wrong with its value.
type KeyProblem struct {
	Reason string
	// NeedsPassphrase: the key is encrypted and no passphrase was given.
	NeedsPassphrase bool
}

func (e *KeyProblem) Error() string { return e.Reason }

// DecodeKey returns the PEM of a private key given either as PEM (a File
// variable, or a multi-line variable) or as base64 of the PEM on one line
// (how GitLab can mask it). Whitespace inside the base64 is ignored.
func DecodeKey(value string) ([]byte, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return nil, &KeyProblem{Reason: "is empty"}
	}
	if strings.HasPrefix(v, "-----BEGIN ") {
		return []byte(v + "\n"), nil
	}
	compact := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, v)
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(compact); err == nil {
			break
		}
	}
	if err != nil {
		return nil, &KeyProblem{Reason: "is neither a PEM private key nor valid base64 (" + err.Error() + ")"}
	}
	raw = bytes.TrimSpace(raw)
	if !bytes.HasPrefix(raw, []byte("-----BEGIN ")) {
		return nil, &KeyProblem{Reason: "decodes from base64, but not to a PEM private key (want the output of `base64 -w0 id_ed25519`)"}
	}
	return append(raw, '\n'), nil
}

// ParseKey turns a PEM private key into a signer. passphrase is used only
// when the key is encrypted; hasPassphrase tells an empty passphrase from
// none given.
func ParseKey(pem []byte, passphrase []byte, hasPassphrase bool) (ssh.Signer, error) {
	s, err := ssh.ParsePrivateKey(pem)
	var missing *ssh.PassphraseMissingError
	switch {
	case err == nil:
		return s, nil
	case errors.As(err, &missing):
		if !hasPassphrase {
			return nil, &KeyProblem{Reason: "is protected by a passphrase, and no passphrase variable is set", NeedsPassphrase: true}
		}
		s, err = ssh.ParsePrivateKeyWithPassphrase(pem, passphrase)
		if errors.Is(err, x509.IncorrectPasswordError) || (err != nil && strings.Contains(err.Error(), "decryption password incorrect")) {
			return nil, &KeyProblem{Reason: "cannot be decrypted with the passphrase given (wrong passphrase)"}
		}
		if err != nil {
			return nil, &KeyProblem{Reason: "is not a usable private key: " + err.Error()}
		}
		return s, nil
	default:
		return nil, &KeyProblem{Reason: "is not a usable private key: " + err.Error()}
	}
}

// KeySecrets are the strings of a key that must never reach a job log: each
// of its body lines (a script that cats the key prints it line by line; the
// whole PEM is masked line by line). The BEGIN/END lines are not secret, so
// the job's secrets list never holds a usable key file. pkg/redact adds the
// encoded forms.
func KeySecrets(pem []byte) []string {
	var out []string
	for _, l := range strings.Split(string(pem), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "-----") {
			continue
		}
		out = append(out, l)
	}
	return out
}

// errorf is fmt.Errorf, named for grep.
var errorf = fmt.Errorf
