// Package seeds runs the pipelines of ../shared/seeds, kept as projects
// under testdata/seeds (.gitlab-ci.yml and manifests), through the
// runner-faithful driver: seed 000 (a dotenv report carries the image from job docker to
// job kube, which deploys with a masked base64 KUBECONFIG) as its author
// wrote it and the ferry way, seed 003 (KUBE_URL/KUBE_TOKEN/KUBE_CA_PEM_FILE,
// kubectl config set-*, sed-rendered template, apply -f dir) and seed 001
// (a CRD and its custom resource in one directory, resource first, with
// namespaces, RBAC and an app). The e2e tests and `make demo` run them.
package seeds

import (
	"os"
	"path/filepath"
	"runtime"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	rd "gitlab.com/ferry-ci/ferry/internal/runnerdriver"
)

// Dir is a seed project under testdata/seeds: "000-kube/before",
// "000-kube/ferry", "003-shark/before", "003-shark/ferry", "001-traefik/ferry".
func Dir(name string) string {
	return filepath.Join(RepoRoot(), "testdata", "seeds", filepath.FromSlash(name))
}

// load reads a seed project's .gitlab-ci.yml and files, and adds the
// variables its author set in the project's CI/CD settings.
func load(name, projectPath string, vars ...rd.Variable) (rd.Pipeline, error) {
	p, err := LoadCI(Dir(name))
	if err != nil {
		return rd.Pipeline{}, err
	}
	p.ProjectPath = projectPath
	p.ProjectVariables = vars
	return p, nil
}

// Seed000ProjectPath is seed 000's project: job docker's image is
// registry.example.com/<it>:<short sha>-<pipeline id>-<job id>.
const Seed000ProjectPath = "group/shark-app"

// Seed000 is seed 000's Kubernetes pipeline, version "before" (as its author
// wrote it: decode the masked variable into the build dir, sed the image in,
// kubectl apply) or "ferry" (no decode lines, no sed; the manifest says
// ${IMAGE}). Job docker publishes the image as a dotenv report, job kube
// (needs docker) deploys it with the masked base64 KUBECONFIG project
// variable, rbac-check tries kube-system.
func Seed000(version string, sa *cluster.Credentials) (rd.Pipeline, error) {
	return load("000-kube/"+version, Seed000ProjectPath,
		rd.Variable{Key: "KUBECONFIG", Value: sa.KubeconfigBase64, Masked: true})
}

// Seed003 is seed 003's push pipeline deployment job, version "before"
// (GitLab's cluster-integration variables, a kubeconfig built with kubectl
// config set-*, a template rendered with sed, a whole directory applied) or
// "ferry" (apply --envsubst of the directory only).
func Seed003(version string, sa *cluster.Credentials) (rd.Pipeline, error) {
	return load("003-shark/"+version, "samiamoura/shark-application",
		rd.Variable{Key: "KUBE_URL", Value: sa.KubeURL, Public: true},
		rd.Variable{Key: "KUBE_TOKEN", Value: sa.KubeToken, Masked: true},
		rd.Variable{Key: "KUBE_CA_PEM_FILE", Value: sa.KubeCAPEM, File: true},
		rd.Variable{Key: "KUBE_NAMESPACE", Value: sa.KubeNamespace, Public: true})
}

// Seed001 is seed 001's Traefik + cert-manager installation reduced to its
// shapes: an Issuer custom resource in a file that sorts BEFORE its CRD and
// its namespace, RBAC objects, and a Deployment, Services and a ConfigMap
// across namespaces, applied as one directory with cluster-admin
// credentials (a masked base64 KUBECONFIG).
func Seed001(adminKubeconfigBase64 string) (rd.Pipeline, error) {
	return load("001-traefik/ferry", "ops/cluster-setup",
		rd.Variable{Key: "KUBECONFIG", Value: adminKubeconfigBase64, Masked: true})
}

// Seed001AsWritten is seed 001 as its author ran it (testdata's
// 001-traefik/before): cert-manager's CRDs applied from crdsURL with
// --validate=false, namespaces and an Issuer created, Traefik's directory
// created, then `kubectl describe certificate`, with cluster-admin
// credentials (a masked base64 KUBECONFIG).
func Seed001AsWritten(adminKubeconfigBase64, crdsURL string) (rd.Pipeline, error) {
	return load("001-traefik/before", "ops/cluster-setup",
		rd.Variable{Key: "KUBECONFIG", Value: adminKubeconfigBase64, Masked: true},
		rd.Variable{Key: "CERT_MANAGER_CRDS", Value: crdsURL, Public: true})
}

// Seed001CRDs is the file Seed001AsWritten's URL must serve.
func Seed001CRDs() string { return Dir("001-traefik/crds/00-crds.yaml") }

// Seed003Pull is seed 003's pull half: a job asks Flux to reconcile the
// shark-app Kustomization now (kubectl annotate) and waits until it is
// Ready (kubectl wait). Seed003Flux is what the cluster must hold first.
func Seed003Pull(adminKubeconfigBase64 string) (rd.Pipeline, error) {
	return load("003-shark/pull", "samiamoura/shark-application",
		rd.Variable{Key: "KUBECONFIG", Value: adminKubeconfigBase64, Masked: true})
}

// Seed003Flux is Flux's Kustomization CRD, its namespace and the
// shark-app Kustomization.
func Seed003Flux() string { return Dir("003-shark/flux/kustomization-crd.yml") }

// RepoRoot is ferry's main module root (this file is e2e/seeds/seeds.go).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BuildFerry builds the ferry binary into dir, as a release is built (the
// engine embedded: scripts/build.sh), and returns its path.
func BuildFerry(dir string) (string, error) { return ferrybuild.Build(dir) }

// NewDriver is a runner-faithful driver whose ferry keeps its state (job
// dirs, dotenv store, discovery cache) under base/state.
func NewDriver(ferry, base string) (*rd.Driver, error) {
	// The host's PATH: ferry puts the job's bin dir (kubectl -> ferry)
	// in front of it, so `kubectl` in a script is ferry's.
	return NewDriverPath(ferry, base, os.Getenv("PATH"))
}

// NewDriverPath is NewDriver with path as the runner's PATH.
func NewDriverPath(ferry, base, path string) (*rd.Driver, error) {
	home := filepath.Join(base, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	return rd.New(rd.Config{
		FerryBinary: ferry,
		BaseDir:     base,
		ExtraArgs:   []string{"--state-dir=" + StateDir(base)},
		Env:         []string{"PATH=" + path, "HOME=" + home, "LANG=C.UTF-8"},
	})
}

// StateDir is where NewDriver's ferry keeps its state.
func StateDir(base string) string { return filepath.Join(base, "state") }
