//go:build ferry_embed

package main

import (
	_ "embed"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
)

// engine is the ferry-engine binary. scripts/build.sh builds it first and
// maps this name to it with -overlay, so no build product lands in the
// source tree.
//
//go:embed ferry-engine.bin
var engine string

func init() { enginebin.SetEmbedded(engine) }
