package kubecreds

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
)

// Encoding says how a kubeconfig variable's value was written.
type Encoding string

const (
	EncodingYAML      Encoding = "YAML"
	EncodingBase64    Encoding = "base64"
	EncodingBase64URL Encoding = "URL-safe base64"
)

// Decode turns a kubeconfig variable's value into kubeconfig bytes. The value
// is either the kubeconfig itself (YAML or JSON) or its base64 encoding in the
// standard or URL-safe alphabet, padded or not, on one line or wrapped, with
// or without a trailing newline (what `base64 -w 0`, `base64` and a pasted
// file give). YAML is recognised by a ':' (every kubeconfig has one, base64
// never does); anything else must be base64.
//
// Errors name the position (1-based byte offset in the value) and never quote
// the value: it is a secret. They are the caller's to prefix with the
// variable's name.
func Decode(value string) ([]byte, Encoding, error) {
	trimmed := strings.TrimSpace(value)
	if trimmed == "" {
		return nil, "", fmt.Errorf("the value is empty")
	}
	if strings.ContainsAny(trimmed, ":{") {
		return []byte(value), EncodingYAML, nil
	}
	lead := len(value) - len(strings.TrimLeft(value, " \t\r\n"))
	var clean []byte
	std, url := -1, -1 // position of the first alphabet-specific character
	padAt := -1
	for i := 0; i < len(trimmed); i++ {
		c := trimmed[i]
		pos := lead + i + 1
		switch {
		case c == '\n' || c == '\r':
			continue // wrapped output of base64 without -w 0
		case padAt >= 0 && c != '=':
			return nil, "", fmt.Errorf("invalid base64 at byte %d: data after '=' padding", pos)
		case c == '=':
			if padAt < 0 {
				padAt = pos
			}
			continue
		case c == '+' || c == '/':
			if std < 0 {
				std = pos
			}
		case c == '-' || c == '_':
			if url < 0 {
				url = pos
			}
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			return nil, "", fmt.Errorf("invalid base64 at byte %d: %s is not in the base64 alphabet", pos, describeByte(c))
		}
		if std >= 0 && url >= 0 {
			return nil, "", fmt.Errorf("invalid base64 at byte %d: mixes the standard (+/) and URL-safe (-_) alphabets", max(std, url))
		}
		clean = append(clean, c)
	}
	if len(clean)%4 == 1 {
		return nil, "", fmt.Errorf("invalid base64: %d characters is not a whole number of bytes (truncated value?)", len(clean))
	}
	enc, name := base64.RawStdEncoding, EncodingBase64
	if url >= 0 {
		enc, name = base64.RawURLEncoding, EncodingBase64URL
	}
	out, err := enc.DecodeString(string(clean))
	if err != nil {
		// Only possible for non-canonical trailing bits; report without data.
		return nil, "", fmt.Errorf("invalid base64 near the end of the value")
	}
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, "", fmt.Errorf("the base64 value decodes to nothing")
	}
	return out, name, nil
}

// describeByte names a byte without quoting secret text around it.
func describeByte(c byte) string {
	switch {
	case c == ' ':
		return "a space"
	case c == '\t':
		return "a tab"
	case c < 0x20 || c >= 0x7f:
		return fmt.Sprintf("byte 0x%02x", c)
	default:
		return fmt.Sprintf("%q", string(c))
	}
}
