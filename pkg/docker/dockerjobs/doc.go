// Package dockerjobs holds the end-to-end tests of ferry's Docker support:
// seed jobs run through pkg/runnerdriver and the built ferry binary against
// a real remote engine (pkg/docker/dockertest). Tests only.
package dockerjobs
