#!/usr/bin/env bash
# Starts the slow builds of `make test`'s last tiers in the background and returns at once:
#   scripts/background-builds.sh TAG
#   scripts/background-builds.sh --promote   (once the main suite is done: see below)
# They run while the main suite does, at a low CPU priority, so they take the cores that suite
# leaves idle while it waits on servers, browsers and Spark, and the downloads overlap its work.
# Two chains, side by side: the images (scripts/images.sh build TAG, then the Compose stand-ins,
# then the cluster tier's images copied into the stopped cluster's image store) at nice 10, and
# the cluster's programs (scripts/local-cluster.sh build, when Go is there) at nice 19: the images
# are needed first (Compose runs before the cluster) and took longest. On a cold machine the copy
# waits for the programs' build to make crictl, its first program, then runs while the rest
# compiles, so the cluster tier finds its images loaded.
# Each build takes its lock, so the tier that needs it waits for the background build to end and
# then finds everything built; a build that failed here runs again there, where its error shows.
# Logs: test-artifacts/background-*.log. Nothing here is needed: without it the tiers build
# what they need themselves.
set -euo pipefail

[ $# -eq 1 ] || { sed -n '2,4p' "$0" >&2; exit 2; }
cd "$(dirname "$0")/.."
mkdir -p test-artifacts

# Once the main suite has ended, the chains are what the last tiers wait for: the Airflow, image
# and Compose tiers leave cores idle, the cluster tier cannot start before the programs are
# built. Each chain's scheduler group goes to nice 0, an equal of the tiers' group: at 19 it
# would also be an equal of every other nice-19 group on the machine and could be starved.
# Needs the right to raise a priority (root, as CI runs); without it the chains keep theirs.
if [ "$1" = --promote ]; then
  for pid_file in test-artifacts/background-*.pid; do
    [ -e "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    # Still the chain: the session leader setsid made it (not a later process given its pid).
    [ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] || continue
    if { echo 0 >"/proc/$pid/autogroup"; } 2>/dev/null; then
      echo "background build: $(basename "$pid_file" .pid | sed 's/^background-//') now at nice 0"
    fi
  done
  exit 0
fi
tag=$1
rm -f test-artifacts/background-*.pid

# Args: the chain's name, its nice level, its command.
start() {
  local name=$1 level=$2
  shift 2
  # setsid: a chain is not stopped by the terminal's signals to make's process group, nor does
  # it hold make's output open. A new session is a new scheduler autogroup on kernels that group
  # by session (sched_autogroup_enabled): a process's nice then only ranks it inside its own
  # group, and the group competes with the test suite's as an equal unless its own nice is set.
  # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
  setsid nohup bash -c '{ echo "$1" >/proc/self/autogroup; } 2>/dev/null; exec nice -n "$1" bash -c "$2"' \
    chain "$level" "$*" </dev/null >"test-artifacts/background-$name.log" 2>&1 &
  echo $! >"test-artifacts/background-$name.pid"
  echo "background build: $name, nice $level (test-artifacts/background-$name.log)"
}

# The images tests/cluster deploys (its IMAGES and STAND_INS): `preload` copies them into the
# cluster's image store (kept by `reset`) so the cluster tier does not wait for the copy,
# installing containerd first on a fresh machine; it does nothing where the cluster cannot run
# (no root) or crictl is not built and no build runs.
cluster_images="forecast-api web-ui training mlflow stream-processor data-producer"
preload="scripts/local-cluster.sh preload"
for name in $cluster_images; do preload+=" localhost/sfmlops-$name:$tag"; done
# shellcheck disable=SC2016 # expanded by the chain's shell, once the stand-ins are built
preload+=' $(scripts/compose-images.sh postgres kafka)'

if command -v podman >/dev/null 2>&1 || command -v docker >/dev/null 2>&1; then
  start images 10 "scripts/images.sh build $tag && scripts/compose-images.sh postgres kafka nginx prometheus && $preload"
fi
if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then
  start cluster-programs 19 "scripts/local-cluster.sh build"
fi
