package jobstate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"gitlab.com/ferry-ci/ferry/pkg/version"
)

// Format is the version of the job state layout this ferry writes into
// meta.json. A runner host is upgraded while jobs run: a job prepared by
// one ferry has its later stages run by the next, so every ferry reads the
// formats before its own and refuses, with one line, a format it does not
// know (a downgrade with jobs in flight), rather than half-read a state it
// does not understand (a secrets file it would not mask, say).
//
//	0  (no "format" in meta.json) written by ferry before format versions;
//	   the same files as format 1
//	1  meta.json records format and the ferry version that wrote it
const Format = 1

// CheckFormat reads meta.json, if there is one, and refuses a state dir
// written in a format newer than this ferry's. A missing meta.json is not
// an error here (prepare has not run, or died before writing it).
func (s *State) CheckFormat() error {
	m, err := s.Meta()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return m.checkFormat(s.dir)
}

func (m Meta) checkFormat(dir string) error {
	if m.Format <= Format {
		return nil
	}
	by := m.Ferry
	if by == "" {
		by = "a newer ferry"
	} else {
		by = "ferry " + by
	}
	return fmt.Errorf("ferry: job state %s was written by %s in state format %d; this ferry %s reads formats up to %d (downgraded while the job ran?): retry the job", dir, by, m.Format, version.Version, Format)
}

// dropUnversioned empties an existing job dir that prepare is about to
// reuse unless a versioned ferry wrote its meta.json for this job's token.
// A prepare retried after a failed attempt finds its own dir (the runner's
// cleanup usually removed it already). A dir without meta.json, or whose
// meta.json has no format or no token hash, was left by a ferry before the
// upgrade or planted by another project's job (jobs could write the state
// root then): its env.json or cleanup.json must not reach this job. Run and
// cleanup still read such a dir: that is a job in flight across the
// upgrade, whose prepare used it already.
func (s *State) dropUnversioned() error {
	m, err := s.Meta()
	if err == nil && m.Format > 0 && m.TokenSHA256 != "" {
		return nil // checkToken has matched it with this job's token
	}
	ents, rerr := os.ReadDir(s.dir)
	if rerr != nil {
		return fmt.Errorf("ferry: state dir %s: %w", s.dir, rerr)
	}
	for _, e := range ents {
		if err := os.RemoveAll(s.Path(e.Name())); err != nil {
			return fmt.Errorf("ferry: state dir %s: clearing what an older ferry left: %w", s.dir, err)
		}
	}
	return nil
}

// UseLegacyDir points the state at the job's dir as a ferry before
// payload-keyed job dirs named it, <root>/jobs/<Key(CI_SERVER_URL,
// CI_JOB_ID)>, when the job has no dir under its own key: a job prepared
// before the upgrade, whose later stages the new ferry runs. ciServerURL is
// the job's CI_SERVER_URL as that ferry read it; the id is the payload's,
// never a job variable. Only a dir written before token binding (no token
// hash) for this job id is taken, and only if the chain of dirs to it is
// sound; prepare never calls this. It reports whether it switched.
func (s *State) UseLegacyDir(ciServerURL string) bool {
	if _, err := os.Lstat(s.dir); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	name := Key(ciServerURL, s.jobID)
	dir := filepath.Join(s.root, JobsDirName, name)
	if dir == s.dir || CheckChain(s.root, JobsDirName, name) != nil {
		return false
	}
	var m Meta
	if err := readJSON(filepath.Join(dir, MetaFile), &m); err != nil || m.TokenSHA256 != "" || m.JobID != s.jobID {
		return false
	}
	s.dir = dir
	return true
}
