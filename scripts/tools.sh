#!/usr/bin/env bash
# Installs what `make test` and `make bench` need on the host, the same for
# a developer's fresh machine and for CI (.ci/run calls it through
# `make tools`): Debian packages for the Docker-over-SSH tests, the
# `docker compose` v2 plugin (scripts/compose.sh) and the reference kubectl
# of the differential tests (scripts/kubectl.sh), both built from source at
# pinned versions into bin/. Idempotent and quick when all is there: apt is
# only asked for what is missing, the builds are skipped when their binary
# is already the pinned version. Runs without a terminal (CI has no stdin);
# as non-root it uses sudo for apt only.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
export GO

need() { command -v "$1" >/dev/null 2>&1; }
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)

# Debian packages (12 and later), each with the file that says it is there:
#   make, git, setsid (util-linux), bash: building and the process tests;
#   sshd, dockerd, docker-registry, busybox (offline images), ip (dockerd's
#   network namespace): the Docker-over-SSH tests (internal/docker,
#   pkg/docker); docker-compose v1 with paramiko for its ssh:// side of the
#   compose differential and bench.
pkgs=()
need make || pkgs+=(make)
need git || pkgs+=(git)
need setsid || pkgs+=(util-linux)
[ -x /usr/sbin/sshd ] || pkgs+=(openssh-server)
[ -x /usr/sbin/dockerd ] || pkgs+=(docker.io)
[ -x /usr/bin/docker-registry ] || pkgs+=(docker-registry)
[ -x /bin/busybox ] || pkgs+=(busybox-static)
need docker-compose || pkgs+=(docker-compose)
dpkg -s python3-paramiko >/dev/null 2>&1 || pkgs+=(python3-paramiko)
need ip || pkgs+=(iproute2)
if [ ${#pkgs[@]} -gt 0 ]; then
	echo "make tools: installing ${pkgs[*]} (apt)"
	"${SUDO[@]}" apt-get update </dev/null
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" </dev/null
fi

if ! need "$GO"; then
	echo "make tools: Go is not on PATH (go.mod wants $(awk '/^go /{print $2}' go.mod))" >&2
	exit 1
fi

# Built from source at the versions pinned in tools/compose and tools/kubectl.
scripts/compose.sh
scripts/kubectl.sh
