#!/usr/bin/env bash
# Installs the Debian packages the tests need, only those missing. Runs as root (CI) or
# through sudo; the project's own files are the only place these steps live.
#   scripts/install-system-deps.sh            what `make test` needs
#   scripts/install-system-deps.sh benchmarks the same (wrk is in both)
#   scripts/install-system-deps.sh cluster    what scripts/local-cluster.sh runs (containerd, ...)
set -euo pipefail

missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing+=(postgresql); fi
# Java runs the Kafka broker and Spark; Maven resolves their jars (scripts/fetch-jars.sh).
if ! command -v java >/dev/null 2>&1; then missing+=(default-jre-headless); fi
if ! command -v mvn >/dev/null 2>&1; then missing+=(maven); fi
# Debian's Chromium is the browser the dashboard's end-to-end tests drive with Playwright
# (never `playwright install`, which downloads its own build).
if [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi
# promtool and amtool check and unit-test the alert rules and their routing (Prometheus'
# packages; their services are not started).
if ! command -v promtool >/dev/null 2>&1; then missing+=(prometheus); fi
if ! command -v amtool >/dev/null 2>&1; then missing+=(prometheus-alertmanager); fi
# wrk drives the API benchmarks and the soak's one-minute test (tests/e2e/test_soak.py).
if ! command -v wrk >/dev/null 2>&1; then missing+=(wrk); fi
if [ "${1:-}" = cluster ]; then
  missing=()
  # The local Kubernetes node: the container runtime, pod networking, kube-proxy's tools, the
  # API server forward, certificates, the static pause program and the volume helper's shell.
  for package_and_file in containerd:/usr/bin/containerd runc:/usr/sbin/runc \
    containernetworking-plugins:/usr/lib/cni/bridge iptables:/usr/sbin/iptables \
    conntrack:/usr/sbin/conntrack socat:/usr/bin/socat openssl:/usr/bin/openssl curl:/usr/bin/curl \
    iproute2:/usr/sbin/ip gcc:/usr/bin/gcc libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a \
    busybox-static:/bin/busybox; do
    [ -e "${package_and_file#*:}" ] || missing+=("${package_and_file%%:*}")
  done
fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
  echo "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Two of these may run at once (make test's background image chain and the cluster's `up`):
# the second waits for dpkg's lock instead of failing.
lock_wait=(-o DPkg::Lock::Timeout=600)
"${sudo[@]}" apt-get "${lock_wait[@]}" update -qq
"${sudo[@]}" apt-get "${lock_wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
