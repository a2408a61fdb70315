# ferry: build, test, benchmark, lint. `make help` lists the targets.
GO       ?= go
BIN      ?= bin/ferry
PREFIX   ?= /usr/local
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BENCHTIME ?= 300x
# The in-process kube-apiserver reports the version it was built as, which
# without the release ldflags is "v0.0.0-master+$Format:%H$" (in ferry's
# preflight line, kubectl version, the demo). Stamp the pinned one.
KUBE_VERSION := $(shell cd e2e 2>/dev/null && $(GO) list -m -f '{{.Version}}' k8s.io/kubernetes 2>/dev/null)
KUBE_VERSION_PARTS := $(subst ., ,$(patsubst v%,%,$(KUBE_VERSION)))
export E2E_LDFLAGS := $(if $(KUBE_VERSION),-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=$(word 1,$(KUBE_VERSION_PARTS)) -X k8s.io/component-base/version.gitMinor=$(word 2,$(KUBE_VERSION_PARTS)) -X k8s.io/component-base/version.gitTreeState=clean)
# The main module's packages; e2e/ is its own module (until its go.mod lands,
# keep it out of the main module's vet and test).
PKGS      = $(shell $(GO) list ./... 2>/dev/null | grep -v '/e2e/')

.PHONY: all build test test-runner-versions bench install lint demo devcluster tools help package compose kubectl testreport

all: build

help:
	@echo "targets: build test test-runner-versions bench install package lint demo devcluster tools compose kubectl"

## build: the ferry binary in $(BIN) (the engine embedded; scripts/build.sh), version stamped from git
build:
	GO=$(GO) scripts/build.sh -o $(BIN) -v $(VERSION)

## test-runner-versions: the driver-based process tests (stages, runnerdriver) under
## each older modelled runner (make test runs them under the default, 19.3);
## FERRY_RUNNER_VERSION sets the driver's version (internal/runnerdriver)
RUNNER_VERSIONS ?= 16.11.4 17.11.4 18.6.6
test-runner-versions: tools
	@for v in $(RUNNER_VERSIONS); do echo "== runner $$v"; FERRY_RUNNER_VERSION=$$v $(GO) test -count=1 -timeout 40m ./stages ./internal/runnerdriver || exit 1; done

## test: unit and process tests of the main module, then the e2e module, exactly what CI runs
## (make tools installs what they need first); each module ends with a line counting the skipped tests, and why
test: tools testreport
	@# -count=1: the process tests (stages, runnerdriver) and the e2e tests build
	@# the ferry binary themselves (scripts/build.sh), which go test's cache cannot see.
	@# -timeout: TestMain builds the whole engine before the first test (minutes
	@# on a cold 2-core machine), and the process tests run real jobs; go test's
	@# default 10 minutes is not a bound on a hang here but on the build.
	@# bin/testreport prints what plain go test prints, then the skips; it
	@# exits with go test's status.
	bin/testreport -label "main module" $(GO) test -json -count=1 -timeout 40m $(PKGS)
	@if [ -f e2e/go.mod ]; then cd e2e && ../bin/testreport -label "e2e module" $(GO) test -json -count=1 -timeout 40m -ldflags "$(E2E_LDFLAGS)" ./...; else echo "e2e/go.mod missing: e2e tests skipped"; fi

## testreport: bin/testreport, which runs go test -json and prints go test's usual lines plus the skipped tests (internal/testreport)
testreport:
	$(GO) build -o bin/testreport ./internal/testreport

## bench: every benchmark with its baseline side by side (stage overhead, redaction, dotenv, apply vs kubectl)
bench: tools
	@scripts/bench.sh

## install: build and copy ferry to $(PREFIX)/bin
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ferry

## package: dist/ferry_<version>_<arch>.deb (nfpm), tarballs and SHA256SUMS, for ARCHES (scripts/package.sh)
ARCHES ?= amd64 arm64
package:
	GO=$(GO) scripts/package.sh -v $(VERSION) -a "$(ARCHES)" -o dist

## lint: gofmt and go vet (both modules)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@if [ -f e2e/go.mod ]; then cd e2e && $(GO) vet ./...; fi

## demo: seed 000's pipeline the ferry way through ferry, against a real embedded API server; job logs as GitLab shows them
# Everything is built before the demo's clock starts (-timeout, 5 minutes,
# covers only the run); ferry is stamped with the version make build uses.
demo:
	@echo "==> building the demo and the embedded Kubernetes API server (the first run takes ~5 minutes on 2 cores; go prints what it fetches)"
	cd e2e && $(GO) build -ldflags "$(E2E_LDFLAGS)" -o ../bin/ferry-demo ./cmd/demo
	./bin/ferry-demo -version $(VERSION)

## devcluster: a real kube-apiserver + etcd on loopback until Ctrl-C (kubeconfigs in .devcluster/)
# Built, then exec'd rather than `go run`: go run dies on SIGTERM without passing it on.
devcluster:
	cd e2e && $(GO) build -ldflags "$(E2E_LDFLAGS)" -o ../bin/devcluster ./cmd/devcluster && exec ../bin/devcluster -dir ../.devcluster

## compose: the `docker compose` v2 plugin for the Docker tests and bench, built from source (pinned in tools/compose) into bin/cli-plugins
compose:
	GO=$(GO) scripts/compose.sh

## kubectl: the reference kubectl of the differential tests, built from the k8s.io/kubectl release ferry links (pinned in tools/kubectl) into bin/kubectl
kubectl:
	GO=$(GO) scripts/kubectl.sh

## tools: everything make test and make bench need on this host, as CI has it (scripts/tools.sh): Debian's sshd, dockerd,
## registry, busybox, compose v1, iproute2 (apt, only what is missing), then compose v2 and the reference kubectl (built, pinned)
tools:
	@GO=$(GO) scripts/tools.sh
