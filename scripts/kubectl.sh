#!/usr/bin/env bash
# Builds the reference kubectl of the differential tests (e2e/differential,
# e2e/kubectl) from source: k8s.io/kubectl at the version pinned in
# tools/kubectl/go.mod, the same kubectl code ferry links, so that the tests
# compare like with like on any machine (a host's kubectl of another minor
# version words its messages differently). A module of its own, so that the
# reference's dependencies never move ferry's. Skips the build when the
# binary there already is that version.
#   scripts/kubectl.sh [-o path]   (default: bin/kubectl)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=bin/kubectl
while getopts o: opt; do
	case $opt in
	o) out=$OPTARG ;;
	*) echo "usage: $0 [-o path]" >&2; exit 2 ;;
	esac
done
case $out in /*) ;; *) out=$PWD/$out ;; esac

ver=$(cd tools/kubectl && $GO list -m -f '{{.Version}}' k8s.io/kubectl)
# k8s.io/kubectl v0.X.Y is Kubernetes v1.X.Y.
kver=v1.${ver#v0.}
if [ -x "$out" ] && "$out" version --client 2>/dev/null | grep -qx "Client Version: $kver"; then
	echo "kubectl ${kver} already built: $out"
	exit 0
fi
mkdir -p "$(dirname "$out")"
echo "building the reference kubectl ${kver} (k8s.io/kubectl ${ver}; the first build takes minutes) -> $out"
IFS=. read -r major minor _ <<<"${kver#v}"
vpkg=k8s.io/component-base/version
# CGO_ENABLED=0 -trimpath: static, and the flags of scripts/build.sh, whose
# engine links the same kubectl packages: a warm build cache serves both.
(cd tools/kubectl && CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w -X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean" -o "$out" .)
"$out" version --client
