// Package seeds holds the pipelines of ../shared/seeds as runner-driver
// pipelines: seed 000 (a dotenv report carries the image from job docker to
// job kube, which deploys with a masked base64 KUBECONFIG) as its author
// wrote it and the ferry way, seed 003 (KUBE_URL/KUBE_TOKEN/KUBE_CA_PEM_FILE,
// kubectl config set-*, sed-rendered template, apply -f dir) and seed 001
// (a CRD and its custom resource in one directory, resource first, with
// namespaces, RBAC and an app). The e2e tests and `make demo` run them.
package seeds

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"gitlab.com/ferry-ci/ferry/e2e/cluster"
	rd "gitlab.com/ferry-ci/ferry/pkg/runnerdriver"
)

// Image is what job docker writes to docker.env.
const Image = "registry.example.com/group/shark-app:90eedc04-7-701"

// deploymentTemplate is seed 000's deployment.yml; image is the placeholder.
func deploymentYAML(image string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: shark-app
  labels:
    app: shark-app
spec:
  replicas: 1
  selector:
    matchLabels:
      app: shark-app
  template:
    metadata:
      labels:
        app: shark-app
    spec:
      containers:
      - name: shark-app
        image: ` + image + `
        ports:
        - containerPort: 8080
`
}

// dockerJob is seed 000's image job: it publishes the image reference as a
// dotenv report (the real job builds and pushes it with kaniko first).
func dockerJob() rd.Job {
	return rd.Job{
		Name: "docker", Stage: "image",
		Variables: []rd.Variable{{Key: "RELEASE_IMAGE", Value: Image, Public: true}},
		Script:    []string{`echo "IMAGE=${RELEASE_IMAGE}" >> docker.env`},
		Artifacts: []rd.Artifact{rd.DotenvReport("docker.env")},
	}
}

// Seed000Original is seed 000's Kubernetes pipeline exactly as its author
// wrote it: decode the masked variable into the build dir, sed the image in,
// kubectl apply; plus the author's RBAC check on kube-system.
func Seed000Original(sa *cluster.Credentials) rd.Pipeline {
	return seed000(sa, deploymentYAML("IMAGE"),
		`echo $KUBECONFIG | base64 --decode > kubeconfig`,
		`export KUBECONFIG=$(pwd)/kubeconfig`,
		`sed -i -e "s|IMAGE|${IMAGE}|g" deployment.yml`,
		`kubectl apply -f deployment.yml`,
	)
}

// Seed000Ferry is the same pipeline written the ferry way: no decode lines,
// no sed; the manifest says ${IMAGE}.
func Seed000Ferry(sa *cluster.Credentials) rd.Pipeline {
	return seed000(sa, deploymentYAML("${IMAGE}"), `kubectl apply --envsubst -f deployment.yml`)
}

// seed000 is the pipeline both versions share: job docker publishes the
// image as a dotenv report, job kube (needs docker) deploys it with the
// masked base64 KUBECONFIG project variable, rbac-check tries kube-system.
func seed000(sa *cluster.Credentials, manifest string, kubeScript ...string) rd.Pipeline {
	return rd.Pipeline{
		ProjectPath: "group/shark-app",
		Files:       map[string]string{"deployment.yml": manifest},
		ProjectVariables: []rd.Variable{
			{Key: "KUBECONFIG", Value: sa.KubeconfigBase64, Masked: true},
		},
		Jobs: []rd.Job{
			dockerJob(),
			{Name: "kube", Stage: "deploy", Needs: []rd.Need{{Job: "docker"}}, Script: kubeScript},
			rbacCheck(),
		},
	}
}

// rbacCheck is the author's demonstration that the ServiceAccount's rights
// end at its namespace: it must fail with Forbidden (allowed to fail).
func rbacCheck() rd.Job {
	return rd.Job{
		Name: "rbac-check", Stage: "deploy", AllowFailure: true,
		Needs:  []rd.Need{},
		Script: []string{`kubectl get all -n kube-system`},
	}
}

// Seed003 is seed 003's push pipeline deployment job: GitLab's cluster
// integration variables, a kubeconfig built with kubectl config, a template
// rendered with sed, and a whole directory applied.
func Seed003(sa *cluster.Credentials) rd.Pipeline {
	tpl := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: shark-app
  labels:
    app: shark-app
spec:
  selector:
    matchLabels:
      app: shark-app
  template:
    metadata:
      labels:
        app: shark-app
    spec:
      containers:
      - name: shark-app
        image: registry.example.com/samiamoura/shark-application:GIT_COMMIT
        ports:
        - containerPort: 8080
`
	svc := `apiVersion: v1
kind: Service
metadata:
  name: shark-app
spec:
  type: NodePort
  selector:
    app: shark-app
  ports:
  - port: 8080
    targetPort: 8080
    nodePort: 30000
`
	return rd.Pipeline{
		ProjectPath: "samiamoura/shark-application",
		Files:       map[string]string{"kubernetes/deployment.tpl": tpl, "kubernetes/service.yml": svc},
		ProjectVariables: []rd.Variable{
			{Key: "KUBE_URL", Value: sa.KubeURL, Public: true},
			{Key: "KUBE_TOKEN", Value: sa.KubeToken, Masked: true},
			{Key: "KUBE_CA_PEM_FILE", Value: sa.KubeCAPEM, File: true},
			{Key: "KUBE_NAMESPACE", Value: sa.KubeNamespace, Public: true},
		},
		Jobs: []rd.Job{{
			Name: "deployment", Stage: "deployment",
			Script: []string{
				`kubectl config set-cluster k8s --server="$KUBE_URL" --certificate-authority="$KUBE_CA_PEM_FILE"`,
				`kubectl config set-credentials gitlab-deploy --token="$KUBE_TOKEN"`,
				`kubectl config set-context default --cluster=k8s --user=gitlab-deploy --namespace="$KUBE_NAMESPACE"`,
				`kubectl config use-context default`,
				`sed "s/GIT_COMMIT/$CI_COMMIT_SHA/" kubernetes/deployment.tpl > kubernetes/deployment.yml`,
				`rm kubernetes/deployment.tpl`,
				`kubectl apply -f kubernetes`,
			},
		}},
	}
}

// Seed001 is seed 001's Traefik + cert-manager installation reduced to its
// shapes: an Issuer custom resource in a file that sorts BEFORE its CRD, a
// namespace, RBAC objects, and a Deployment, Service and ConfigMap across
// namespaces, applied as one directory with cluster-admin credentials.
func Seed001(adminKubeconfigBase64 string) rd.Pipeline {
	files := map[string]string{
		"k8s/00-issuer.yml": `apiVersion: cert-manager.io/v1
kind: Issuer
metadata:
  name: letsencrypt-staging
  namespace: traefik
spec:
  acme:
    email: ops@example.com
    server: https://acme-staging-v02.api.letsencrypt.org/directory
`,
		"k8s/10-crds.yml": `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: issuers.cert-manager.io
spec:
  group: cert-manager.io
  names:
    kind: Issuer
    listKind: IssuerList
    plural: issuers
    singular: issuer
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
`,
		"k8s/20-namespace.yml": `apiVersion: v1
kind: Namespace
metadata:
  name: traefik
`,
		"k8s/30-rbac.yml": `apiVersion: v1
kind: ServiceAccount
metadata:
  name: traefik-ingress-controller
  namespace: traefik
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: traefik-ingress-controller
rules:
- apiGroups: [""]
  resources: ["services", "endpoints", "secrets"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: traefik-ingress-controller
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: traefik-ingress-controller
subjects:
- kind: ServiceAccount
  name: traefik-ingress-controller
  namespace: traefik
`,
		"k8s/40-app.yml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: traefik-config
  namespace: traefik
data:
  traefik.toml: |
    [entryPoints.web]
    address = ":80"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: traefik
  namespace: traefik
spec:
  selector:
    matchLabels:
      app: traefik
  template:
    metadata:
      labels:
        app: traefik
    spec:
      serviceAccountName: traefik-ingress-controller
      containers:
      - name: traefik
        image: traefik:v2.3
---
apiVersion: v1
kind: Service
metadata:
  name: whoami
  namespace: default
spec:
  selector:
    app: whoami
  ports:
  - port: 80
`,
	}
	return rd.Pipeline{
		ProjectPath: "ops/cluster-setup",
		Files:       files,
		ProjectVariables: []rd.Variable{
			{Key: "KUBECONFIG", Value: adminKubeconfigBase64, Masked: true},
		},
		Jobs: []rd.Job{{
			Name: "install", Stage: "deploy",
			Script: []string{`kubectl apply --validate=false -f k8s`},
		}},
	}
}

// RepoRoot is ferry's main module root (this file is e2e/seeds/seeds.go).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BuildFerry builds the ferry binary into dir and returns its path.
func BuildFerry(dir string) (string, error) {
	out := filepath.Join(dir, "ferry")
	cmd := exec.Command("go", "build", "-o", out, "./executor")
	cmd.Dir = RepoRoot()
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building ferry: %w", err)
	}
	return out, nil
}

// NewDriver is a runner-faithful driver whose ferry keeps its state (job
// dirs, dotenv store, discovery cache) under base/state.
func NewDriver(ferry, base string) (*rd.Driver, error) {
	home := filepath.Join(base, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	return rd.New(rd.Config{
		FerryBinary: ferry,
		BaseDir:     base,
		ExtraArgs:   []string{"--state-dir=" + StateDir(base)},
		// The host's PATH: ferry puts the job's bin dir (kubectl -> ferry)
		// in front of it, so `kubectl` in a script is ferry's.
		Env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"},
	})
}

// StateDir is where NewDriver's ferry keeps its state.
func StateDir(base string) string { return filepath.Join(base, "state") }
