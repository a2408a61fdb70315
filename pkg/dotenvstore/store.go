// Package dotenvstore keeps dotenv reports between the job that writes one
// (the producer) and the jobs that receive its variables (the consumers).
//
// A report is identified by the GitLab instance (CI_SERVER_URL) and the
// producer's job id: GitLab job ids are unique per instance, and a consumer
// only knows its dependencies by id (payload dependencies[]), which may sit in
// another pipeline (needs:pipeline:job) or project (needs:project). The
// project, pipeline and job name are recorded with the report for logs,
// labels and the sweep. Every report is sealed with an HMAC keyed by the
// producer's job token (Seal); the consumer's payload carries the same token
// in dependencies[].token and Verify refuses a report that anyone else wrote
// or changed, or that belongs to another job (sign.go). The store itself is
// therefore not trusted: any job on the host may be able to write it.
//
// Two backends: a directory on the runner host (Dir) and Kubernetes Secrets
// in a namespace the runner admin chooses (Kube), for fleets where producer
// and consumer run on different hosts.
package dotenvstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/dotenv"
)

// ErrNotFound is returned by Get when no (unexpired) report exists.
var ErrNotFound = errors.New("no dotenv report stored")

// Key names one producer job.
type Key struct {
	ServerURL  string // CI_SERVER_URL
	ProjectID  int64
	PipelineID int64
	JobID      int64
	JobName    string // for logs only
}

// ServerHash is the first 16 hex digits of sha256(ServerURL without a
// trailing slash): a stable, label-safe name for the instance.
func (k Key) ServerHash() string {
	sum := sha256.Sum256([]byte(strings.TrimRight(k.ServerURL, "/")))
	return hex.EncodeToString(sum[:8])
}

func (k Key) String() string {
	return fmt.Sprintf("%s job %d (%s, project %d, pipeline %d)", strings.TrimRight(k.ServerURL, "/"), k.JobID, k.JobName, k.ProjectID, k.PipelineID)
}

// Check refuses a key that cannot name a report (every backend calls it).
func (k Key) Check() error {
	if k.ServerURL == "" || k.JobID <= 0 {
		return fmt.Errorf("dotenvstore: key needs CI_SERVER_URL and a job id, got %q and %d", k.ServerURL, k.JobID)
	}
	return nil
}

// Report is what is stored for one producer job.
type Report struct {
	Version    int          `json:"version"`
	ServerURL  string       `json:"server_url"`
	ProjectID  int64        `json:"project_id"`
	PipelineID int64        `json:"pipeline_id"`
	JobID      int64        `json:"job_id"`
	JobName    string       `json:"job_name"`
	Files      []string     `json:"files"` // report files, relative to the project dir
	Vars       []dotenv.Var `json:"vars"`
	SecretKeys []string     `json:"secret_keys,omitempty"` // keys the producer marked secret
	Created    time.Time    `json:"created"`
	Expires    time.Time    `json:"expires,omitzero"` // zero: never
	// MAC is the hex HMAC-SHA256 of the rest, keyed by the producer's job
	// token (Seal, Verify).
	MAC string `json:"mac,omitempty"`
}

// Expired reports whether r has expired at now.
func (r *Report) Expired(now time.Time) bool {
	return !r.Expires.IsZero() && !now.Before(r.Expires)
}

// Store is where reports live.
type Store interface {
	// Put stores r under k (replacing an earlier report of the same job).
	Put(ctx context.Context, k Key, r *Report) error
	// Get returns the report of k's job; ErrNotFound (wrapped) when there is
	// none or it has expired.
	Get(ctx context.Context, k Key) (*Report, error)
	// Sweep removes reports expired at now and returns how many.
	Sweep(ctx context.Context, now time.Time) (int, error)
}

// Fill stamps the report with its key and format version before a backend
// stores it.
func (r *Report) Fill(k Key) {
	r.Version = FormatVersion
	r.ServerURL = strings.TrimRight(k.ServerURL, "/")
	r.ProjectID, r.PipelineID, r.JobID, r.JobName = k.ProjectID, k.PipelineID, k.JobID, k.JobName
	if r.Created.IsZero() {
		r.Created = time.Now().UTC()
	}
}

// DefaultExpiry is used when the artifact has no expire_in: GitLab's default
// instance setting for artifacts is 30 days.
const DefaultExpiry = 30 * 24 * time.Hour

// ParseExpireIn parses GitLab's artifacts:expire_in (ChronicDuration):
// "30 mins", "1 day", "2 hrs 20 min", "1 week and 2 days", "3600" (seconds),
// "never". never reports "never"; "" is an error (the caller picks a default).
func ParseExpireIn(s string) (d time.Duration, never bool, err error) {
	in := strings.ToLower(strings.TrimSpace(s))
	if in == "never" {
		return 0, true, nil
	}
	if in == "" {
		return 0, false, errors.New("empty duration")
	}
	if n, err := strconv.ParseFloat(in, 64); err == nil && n > 0 {
		return time.Duration(n * float64(time.Second)), false, nil
	}
	fields := strings.FieldsFunc(in, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
	var total float64
	var num *float64
	for _, f := range fields {
		if f == "and" {
			continue
		}
		// "30mins": split the number from the unit.
		i := 0
		for i < len(f) && (f[i] >= '0' && f[i] <= '9' || f[i] == '.') {
			i++
		}
		if i > 0 {
			n, err := strconv.ParseFloat(f[:i], 64)
			if err != nil || num != nil {
				return 0, false, fmt.Errorf("invalid duration %q", s)
			}
			num = &n
			f = f[i:]
			if f == "" {
				continue
			}
		}
		unit, ok := units[f]
		if !ok || num == nil {
			return 0, false, fmt.Errorf("invalid duration %q", s)
		}
		total += *num * unit
		num = nil
	}
	if num != nil { // a trailing bare number: seconds
		total += *num
	}
	if total <= 0 {
		return 0, false, fmt.Errorf("invalid duration %q", s)
	}
	return time.Duration(total * float64(time.Second)), false, nil
}

// units in seconds, with ChronicDuration's month (30 days) and year (365 days).
var units = func() map[string]float64 {
	m := map[string]float64{}
	add := func(sec float64, names ...string) {
		for _, n := range names {
			m[n] = sec
		}
	}
	add(1, "s", "sec", "secs", "second", "seconds")
	add(60, "m", "min", "mins", "minute", "minutes")
	add(3600, "h", "hr", "hrs", "hour", "hours")
	add(86400, "d", "day", "days")
	add(7*86400, "w", "wk", "wks", "week", "weeks")
	add(30*86400, "mo", "mos", "month", "months")
	add(365*86400, "y", "yr", "yrs", "year", "years")
	return m
}()
