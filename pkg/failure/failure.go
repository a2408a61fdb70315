// Package failure classifies errors the way GitLab Runner classifies a failed
// custom executor call: the user's mistake (a bad variable, a bad file, a failed
// script) is a build failure; anything else means the host could not do its work
// and is a system failure, which the runner may retry.
package failure

import "errors"

// buildError marks an error as the user's mistake.
type buildError struct{ err error }

func (e *buildError) Error() string { return e.err.Error() }
func (e *buildError) Unwrap() error { return e.err }

// Build marks err as a build failure (the job's own input or script is at fault).
// Build(nil) is nil.
func Build(err error) error {
	if err == nil {
		return nil
	}
	return &buildError{err: err}
}

// IsBuild reports whether err, or any error it wraps, was marked with Build.
func IsBuild(err error) bool {
	var b *buildError
	return errors.As(err, &b)
}
