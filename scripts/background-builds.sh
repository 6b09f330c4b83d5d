#!/usr/bin/env bash
# Starts the slow builds of `make test`'s last tiers in the background and returns at once:
#   scripts/background-builds.sh TAG
# They run while the main suite does, at the lowest CPU priority, so they take the cores that
# suite leaves idle while it waits on servers, browsers and Spark, and the downloads overlap its
# work. Two chains, side by side: the images (scripts/images.sh build TAG, then the Compose
# stand-ins) and the cluster's programs (scripts/local-cluster.sh build, when Go is there).
# Each build takes its lock, so the tier that needs it waits for the background build to end and
# then finds everything built; a build that failed here runs again there, where its error shows.
# Logs: test-artifacts/background-*.log. Nothing here is needed: without it the tiers build
# what they need themselves.
set -euo pipefail

[ $# -eq 1 ] || { sed -n '2,3p' "$0" >&2; exit 2; }
tag=$1
cd "$(dirname "$0")/.."
mkdir -p test-artifacts

start() {
  local name=$1
  shift
  # setsid: a chain is not stopped by the terminal's signals to make's process group, nor does
  # it hold make's output open.
  setsid nohup nice -n 19 bash -c "$*" </dev/null >"test-artifacts/background-$name.log" 2>&1 &
  echo "background build: $name (test-artifacts/background-$name.log)"
}

if command -v podman >/dev/null 2>&1 || command -v docker >/dev/null 2>&1; then
  start images "scripts/images.sh build $tag && scripts/compose-images.sh postgres kafka nginx prometheus"
fi
if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then
  start cluster-programs "scripts/local-cluster.sh build"
fi
