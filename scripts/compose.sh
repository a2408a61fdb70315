#!/usr/bin/env bash
# Builds the `docker compose` v2 CLI plugin from source for the Docker tests
# and `make bench` (Debian 12 packages compose v1 only). Its version is
# pinned in tools/compose/go.mod, a module of its own so that compose's
# ~190 dependencies stay out of ferry's. Skips the build when the plugin
# there already is that version.
#   scripts/compose.sh [-o path]   (default: bin/cli-plugins/docker-compose)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=bin/cli-plugins/docker-compose
while getopts o: opt; do
	case $opt in
	o) out=$OPTARG ;;
	*) echo "usage: $0 [-o path]" >&2; exit 2 ;;
	esac
done
case $out in /*) ;; *) out=$PWD/$out ;; esac

mod=github.com/docker/compose/v2
ver=$(cd tools/compose && $GO list -m -f '{{.Version}}' "$mod")
if [ -x "$out" ] && [ "$("$out" version --short 2>/dev/null)" = "${ver#v}" ]; then
	echo "docker compose ${ver} already built: $out"
	exit 0
fi
mkdir -p "$(dirname "$out")"
echo "building docker compose ${ver} (the first build takes minutes) -> $out"
# internal.Version is what `docker compose version` prints.
(cd tools/compose && $GO build -trimpath -ldflags "-s -w -X $mod/internal.Version=$ver" -o "$out" "$mod/cmd")
"$out" version
