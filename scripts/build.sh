#!/usr/bin/env bash
# Builds the release ferry binary: the engine (executor/engine, everything
# that links k8s.io/client-go) and the job's small kubectl (executor/kubectl:
# apply and diff without kubectl's command code) first, then the small ferry
# binary the runner calls (executor/) with both embedded, so a runner host
# installs one file. Why three binaries: docs/executor.md, "Two binaries in
# one file", and docs/kubectl.md, "Two kubectl binaries".
#
#   scripts/build.sh [-o OUT] [-v VERSION] [-c] [-l LIBDIR]
#
# -l also writes the two embedded binaries to LIBDIR as ferry-engine-SUM and
# ferry-kubectl-SUM: the files a package installs in /usr/lib/ferry, which
# the ferry beside them runs without unpacking (pkg/enginebin, Installed).
#
# -c builds both with coverage instrumentation of ferry's packages (for the
# process tests: FERRY_COVERDIR, docs/bad-input.md); such a binary writes
# coverage data to $GOCOVERDIR and warns on stderr when it is not set.
#
# Tests build ferry with this script too, so they run what ships. Safe to run
# concurrently: nothing is written into the source tree (-overlay maps the
# embedded file name to a temporary build of the engine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/bin/ferry
version=
cover=()
libdir=
while getopts o:v:cl: opt; do
  case $opt in
    o) out=$OPTARG ;;
    v) version=$OPTARG ;;
    c) cover=(-cover -covermode=atomic -coverpkg=gitlab.com/ferry-ci/ferry/...) ;;
    l) libdir=$OPTARG ;;
    *) echo "usage: $0 [-o OUT] [-v VERSION] [-c] [-l LIBDIR]" >&2; exit 2 ;;
  esac
done
GO=${GO:-go}
if [ -z "$version" ]; then
  version=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
ldflags="-X gitlab.com/ferry-ci/ferry/pkg/version.Version=$version"
cd "$root"
# -s -w: the engine is unpacked once per host and version; without symbols it
# is about a third smaller (panics still print function names and lines).
# CGO_ENABLED=0: static binaries (Go's own DNS resolver), which run on any
# Linux host whatever its libc, and skip the dynamic loader at every start.
CGO_ENABLED=0 "$GO" build -trimpath ${cover[@]+"${cover[@]}"} -ldflags "$ldflags -s -w" -o "$tmp/ferry-engine" ./executor/engine
CGO_ENABLED=0 "$GO" build -trimpath ${cover[@]+"${cover[@]}"} -ldflags "$ldflags -s -w" -o "$tmp/ferry-kubectl" ./executor/kubectl
# One sum for the pair (pkg/enginebin names both files with it).
sum=$(cat "$tmp/ferry-engine" "$tmp/ferry-kubectl" | sha256sum | cut -d' ' -f1)
printf '{"Replace":{"%s":"%s","%s":"%s"}}\n' "$root/executor/ferry-engine.bin" "$tmp/ferry-engine" \
  "$root/executor/ferry-kubectl.bin" "$tmp/ferry-kubectl" >"$tmp/overlay.json"
mkdir -p "$(dirname "$out")"
CGO_ENABLED=0 "$GO" build -trimpath ${cover[@]+"${cover[@]}"} -tags ferry_embed -overlay "$tmp/overlay.json" \
  -ldflags "$ldflags -X gitlab.com/ferry-ci/ferry/pkg/enginebin.EmbeddedSum=$sum" -o "$out" ./executor
if [ -n "$libdir" ]; then
  # The names pkg/enginebin gives them: the pair's sum, 16 hex digits.
  mkdir -p "$libdir"
  install -m 0755 "$tmp/ferry-engine" "$libdir/ferry-engine-${sum:0:16}"
  install -m 0755 "$tmp/ferry-kubectl" "$libdir/ferry-kubectl-${sum:0:16}"
fi
