#!/usr/bin/env bash
# Installs what builds and runs the sfmlops images without Docker: Debian's podman with runc
# (crun cannot run containers on a hybrid cgroup v1/v2 host), mmdebstrap for the local base
# images (scripts/base-images.sh), uidmap, and the CNI dnsname plugin (podman 4's networks resolve
# container names with it: Compose services find each other by name). Only missing packages are
# installed; runs as root (CI) or through sudo. A machine with a working Docker daemon needs none.
set -euo pipefail

if [ "${SFMLOPS_CONTAINER_ENGINE:-}" != podman ] && command -v docker >/dev/null 2>&1 \
  && timeout 20 docker info >/dev/null 2>&1; then
  exit 0
fi
missing=()
for command_package in podman:podman runc:runc mmdebstrap:mmdebstrap newuidmap:uidmap; do
  command -v "${command_package%%:*}" >/dev/null 2>&1 || missing+=("${command_package#*:}")
done
[ -x /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
  echo "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
