package dotenvstore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// FormatVersion is the report format this package writes: 2 is the first
// with a MAC. Reports of format 1 (unsigned) are refused by Verify.
const FormatVersion = 2

// ErrNotAuthentic is wrapped by Verify's errors: the report was not written
// by the producer job it names (altered, forged, replayed, or unsigned).
var ErrNotAuthentic = errors.New("not authentic")

// ErrInvalid is wrapped by a backend's Get when what is stored under a key
// is not a report of that key (unreadable, another job's): as anyone who
// could write the store could have put it there, callers treat it like a
// report that fails Verify.
var ErrInvalid = errors.New("invalid stored report")

// macDomain keeps these MACs apart from any other use of a job token.
const macDomain = "ferry dotenv report v2\x00"

// Seal stamps r with its key (Fill) and signs it with the producer job's
// token: HMAC-SHA256, keyed by the token, over everything in the report
// (instance, project, pipeline, job id and name, files, variables, secret
// keys, times). Only a holder of the producer's token — the producer job,
// and GitLab, which hands it to the consumers in their payload's
// dependencies[].token — can write a report that Verify accepts.
func Seal(k Key, r *Report, token string) error {
	if token == "" {
		return fmt.Errorf("dotenvstore: report of %s: no job token to sign it with", k)
	}
	r.Fill(k)
	mac, err := r.mac(token)
	if err != nil {
		return err
	}
	r.MAC = mac
	return nil
}

// Verify checks that r was sealed with token (the consumer's
// dependencies[].token of the producer) and is the report of want: same
// instance, job id and (when want has one) job name. A report sealed by
// another job, in another pipeline or for another job of the same name
// fails, as does any change to it. Errors wrap ErrNotAuthentic.
func (r *Report) Verify(token string, want Key) error {
	if r.Version < FormatVersion || r.MAC == "" {
		return fmt.Errorf("unsigned (format %d): %w", r.Version, ErrNotAuthentic)
	}
	if token == "" {
		return fmt.Errorf("the job payload has no token for this dependency to check it with: %w", ErrNotAuthentic)
	}
	mac, err := r.mac(token)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(r.MAC)
	if err != nil || !hmac.Equal(got, mustHex(mac)) {
		return fmt.Errorf("its MAC does not match the producer's job token (altered, forged, or another job's report): %w", ErrNotAuthentic)
	}
	switch {
	case r.JobID != want.JobID:
		return fmt.Errorf("it is the report of job %d: %w", r.JobID, ErrNotAuthentic)
	case want.JobName != "" && r.JobName != want.JobName:
		return fmt.Errorf("it is the report of a job named %q: %w", r.JobName, ErrNotAuthentic)
	case strings.TrimRight(want.ServerURL, "/") != r.ServerURL:
		return fmt.Errorf("it is a report of %s: %w", r.ServerURL, ErrNotAuthentic)
	}
	return nil
}

// mac is the hex HMAC-SHA256 of the report without its MAC field. The
// message is the report's JSON (Go encodes struct fields in a fixed order;
// times are normalised to UTC so that a decoded report gives the same bytes).
func (r *Report) mac(token string) (string, error) {
	c := *r
	c.MAC = ""
	c.Created, c.Expires = c.Created.UTC(), c.Expires.UTC()
	b, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("dotenvstore: encode report: %w", err)
	}
	h := hmac.New(sha256.New, []byte(token))
	h.Write([]byte(macDomain))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}
