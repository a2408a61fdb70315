// Package layout holds no code: its test keeps the repository's layout
// contract (docs/ARCHITECTURE.md), that no product package imports a test
// harness under internal/.
package layout
