// Package kustomize builds kustomization directories for kubectl -k with
// kustomize's own library (krusty, the code kubectl links). It is its own
// package so that only the engine links it: krusty brings in protobuf and
// OpenAPI packages whose initialisers would slow every start of the job's
// small kubectl (executor/kubectl), which hands -k to the engine.
package kustomize

import (
	"fmt"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Build builds the kustomization directory dir from the disk, as kubectl
// -k, and returns the YAML stream (pkg/apply.ReadOptions.Kustomizer).
func Build(dir string) ([]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	data, err := m.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	return data, nil
}
