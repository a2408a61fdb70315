//go:build ferry_embed

package main

import (
	_ "embed"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
)

// engine is the ferry-engine binary and kubectl the job's small kubectl
// (executor/kubectl). scripts/build.sh builds them first and maps these
// names to them with -overlay, so no build product lands in the source
// tree.
var (
	//go:embed ferry-engine.bin
	engine string
	//go:embed ferry-kubectl.bin
	kubectl string
)

func init() { enginebin.SetEmbedded(engine, kubectl) }
