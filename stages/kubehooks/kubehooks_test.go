package kubehooks

import (
	"slices"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/kubecreds"
	"gitlab.com/ferry-ci/ferry/stages"
)

// The lean stages package spells --kube-sources' default without importing
// kubecreds; it must still name every source kubecreds knows.
func TestDefaultKubeSourcesParse(t *testing.T) {
	got, err := kubecreds.ParseSources(stages.DefaultKubeSources)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{kubecreds.SourceKubeconfig, kubecreds.SourceClusterVars}
	if !slices.Equal(got, want) {
		t.Fatalf("ParseSources(%q) = %q, want %q", stages.DefaultKubeSources, got, want)
	}
}
