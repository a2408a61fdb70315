#!/usr/bin/env bash
# Builds ferry's release files into dist/ (make package):
#   ferry_<version>_<arch>.deb          nfpm (packaging/nfpm.yaml): /usr/bin/ferry,
#                                       /usr/lib/ferry/ferry-{engine,kubectl}-SUM (root-owned:
#                                       ferry runs them without unpacking its own copy),
#                                       /usr/share/doc/ferry/{README.md,config.toml.example,docs/}
#   ferry_<version>_linux_<arch>.tar.gz the same files in one directory
#   SHA256SUMS                          of all of them
#
#   scripts/package.sh [-v VERSION] [-a "amd64 arm64"] [-o DIR] [-b FERRY -l LIBDIR]
#
# Each arch gets its own build (scripts/build.sh with GOARCH): the engine
# embedded in ferry is built for the same arch. -b packages an existing ferry
# build instead (one arch; tests build once and package that), with -l the
# directory its scripts/build.sh -l wrote the engine and kubectl to. nfpm comes from
# the module proxy, pinned in tools/go.mod, so it stays out of ferry's own
# go.mod.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
version=
arches="amd64 arm64"
out=$root/dist
prebuilt=
prebuiltlib=
while getopts v:a:o:b:l: opt; do
  case $opt in
    v) version=$OPTARG ;;
    a) arches=$OPTARG ;;
    o) out=$OPTARG ;;
    b) prebuilt=$OPTARG ;;
    l) prebuiltlib=$OPTARG ;;
    *) echo "usage: $0 [-v VERSION] [-a ARCHES] [-o DIR] [-b FERRY -l LIBDIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$version" ]; then
  version=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)
fi
if [ -n "$prebuilt" ] && [ "$(wc -w <<<"$arches")" != 1 ]; then
  echo "$0: -b packages one build: give its arch with -a" >&2
  exit 2
fi
if [ -n "$prebuilt" ] && [ -z "$prebuiltlib" ]; then
  echo "$0: -b needs -l, the engine and kubectl of that build (scripts/build.sh -l)" >&2
  exit 2
fi
# A Debian version starts with a digit and holds only [A-Za-z0-9.+~]
# (a dash would start the Debian revision): v1.2.3 -> 1.2.3,
# v1.2.3-4-gabc -> 1.2.3+4.gabc, a bare commit abc123 -> 0~abc123.
debversion=${version#v}
debversion=$(sed -e 's/-/+/' -e 's/-/./g' -e 's/[^A-Za-z0-9.+~]/./g' <<<"$debversion")
case $debversion in [0-9]*) ;; *) debversion="0~$debversion" ;; esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
# Files in the tarballs get the commit's time, not the build's.
epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH=$epoch
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$root"
# Build nfpm once (go tool caches it).
"$GO" -C tools build -o "$work/nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm

files=()
for arch in $arches; do
  bin=$prebuilt
  lib=$prebuiltlib
  if [ -z "$bin" ]; then
    bin=$work/$arch/ferry
    lib=$work/$arch/lib
    GOARCH=$arch GO=$GO scripts/build.sh -o "$bin" -v "$version" -l "$lib"
  fi
  lib=$(cd "$lib" && pwd)
  if [ "$(ls "$lib"/ferry-engine-* "$lib"/ferry-kubectl-* 2>/dev/null | wc -l)" != 2 ]; then
    echo "$0: $lib must hold one ferry-engine-SUM and one ferry-kubectl-SUM" >&2
    exit 1
  fi
  deb=ferry_${debversion}_${arch}.deb
  sum=$(basename "$lib"/ferry-kubectl-*); sum=${sum#ferry-kubectl-}
  FERRY_PKG_ARCH=$arch FERRY_PKG_VERSION=$debversion FERRY_PKG_BINARY=$bin FERRY_PKG_LIBDIR=$lib FERRY_PKG_SUM=$sum \
    "$work/nfpm" package --packager deb --config packaging/nfpm.yaml --target "$out/$deb" >/dev/null
  files+=("$deb")

  name=ferry_${version}_linux_${arch}
  stage=$work/tar/$name
  mkdir -p "$stage/docs"
  install -m 0755 "$bin" "$stage/ferry"
  install -m 0644 README.md config.toml.example "$stage/"
  install -m 0644 docs/*.md "$stage/docs/"
  tar -C "$work/tar" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    -cf - "$name" | gzip -n >"$out/$name.tar.gz"
  files+=("$name.tar.gz")
  echo "$out/$deb"
  echo "$out/$name.tar.gz"
done
(cd "$out" && sha256sum "${files[@]}" >SHA256SUMS)
echo "$out/SHA256SUMS"
