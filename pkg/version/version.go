// Package version holds ferry's version, stamped at build time with
// -ldflags "-X gitlab.com/ferry-ci/ferry/pkg/version.Version=<version>".
package version

// Version is "dev" for an unstamped build (go run, go test).
var Version = "dev"
