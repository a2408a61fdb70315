// Package dockerjobs holds the end-to-end tests of ferry's Docker support:
// seed jobs run through internal/runnerdriver and the built ferry binary against
// a real remote engine (internal/docker/dockertest). Tests only.
package dockerjobs
