// Package enginelock is the deploy lock on a Docker engine (docs/deploy-safety.md,
// "The deploy lock on Docker engines"): a leased container per target.
package enginelock

// ImageRepo is the repository of the lease image ferry loads once per engine.
const ImageRepo = "ferry-lock-lease"
