package kubecreds

import (
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzDecode: Decode never panics, errors are one line and never quote more
// than one byte of the value, and every base64 form of a value decodes back.
func FuzzDecode(f *testing.F) {
	f.Add("YXBpVmVyc2lvbjogdjEKa2luZDogQ29uZmlnCg==")
	f.Add("apiVersion: v1\nkind: Config\n")
	f.Add("aGVsbG8*")
	f.Fuzz(func(t *testing.T, value string) {
		out, _, err := Decode(value)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			if v := strings.TrimSpace(value); len(v) >= 8 && strings.Contains(err.Error(), v) {
				t.Fatalf("error quotes the value: %q", err)
			}
			return
		}
		_ = out
		if strings.TrimSpace(value) == "" || strings.ContainsAny(value, ":{") {
			return
		}
		// Round trip through every encoding.
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			back, _, err := Decode(enc.EncodeToString(out) + "\n")
			if err != nil || string(back) != string(out) {
				t.Fatalf("round trip %v: %v", enc, err)
			}
		}
	})
}
