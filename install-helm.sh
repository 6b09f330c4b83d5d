#!/usr/bin/env bash
# Installs the pinned Helm used by every sfmlops deploy step (local cluster, CI, GKE workflow).
#   ./install-helm.sh [DEST_DIR]      Helm 3 (HELM_VERSION); default DEST_DIR: ~/.local/bin
#   ./install-helm.sh DEST_DIR 4      Helm 4 (HELM4_VERSION), which users run as well: the chart
#                                     is tested with both (tests/deploy, tests/cluster)
# With Go on the PATH, Helm is built from its module (go install, checksummed by the Go sum
# database); otherwise the official release archive is downloaded and its SHA-256 verified.
set -euo pipefail

HELM_VERSION=v3.21.4
# The Kubernetes version of Helm 3.21's client-go (v0.36): what `helm lint` and `helm template`
# assume as the cluster version; the release archives are built with the same value.
HELM_KUBE_MINOR=36
# The Helm 4 release of the same line as HELM_VERSION (3.21 and 4.2 were released together).
# Helm 4 reads its default Kubernetes version from its client-go's build information.
HELM4_VERSION=v4.2.4
dest=${1:-$HOME/.local/bin}
major=${2:-3}
case "$major" in
  3) version=$HELM_VERSION build="$HELM_VERSION k8s-1.$HELM_KUBE_MINOR" ;;
  4) version=$HELM4_VERSION build="$HELM4_VERSION" ;;
  *) echo "Helm major version must be 3 or 4, not $major" >&2; exit 2 ;;
esac
mkdir -p "$dest"

# A stamp beside the binary records what it was built as (the Kubernetes version is not in
# `helm version`), so a changed pin rebuilds it.
stamp="$dest/.helm-build"
if [ -x "$dest/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$build" ]; then
  exit 0
fi

if command -v go >/dev/null 2>&1; then
  # Go caches of this build only, deleted after, unless the caller gives some
  # (scripts/install-deploy-tools.sh shares one pair between its builds): Go's defaults
  # (~/.cache/go-build, ~/go/pkg/mod) would keep about 2 GB that nothing reads again.
  if [ -z "${GOCACHE:-}" ] || [ -z "${GOMODCACHE:-}" ]; then
    go_caches=$(mktemp -d)
    trap 'rm -rf "$go_caches"' EXIT
    export GOCACHE=$go_caches/build GOMODCACHE=$go_caches/mod
  fi
  # The same ldflags as Helm's own Makefile: its version string (and for Helm 3 its default
  # Kubernetes version).
  module=helm.sh/helm/v$major
  ldflags="-s -w -X $module/internal/version.version=$version"
  if [ "$major" = 3 ]; then
    for package in $module/pkg/lint/rules $module/pkg/chartutil; do
      ldflags+=" -X $package.k8sVersionMajor=1 -X $package.k8sVersionMinor=$HELM_KUBE_MINOR"
    done
  fi
  # -modcacherw: a module cache that can be deleted like any folder.
  GOBIN=$(cd "$dest" && pwd) GOFLAGS="-trimpath -modcacherw" nice -n 10 go install -ldflags "$ldflags" \
    "$module/cmd/helm@$version"
else
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
  esac
  os=$(uname -s | tr '[:upper:]' '[:lower:]')
  archive="helm-$version-$os-$arch.tar.gz"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  curl -fsSL -o "$work/$archive" "https://get.helm.sh/$archive"
  curl -fsSL -o "$work/$archive.sha256sum" "https://get.helm.sh/$archive.sha256sum"
  (cd "$work" && sha256sum -c "$archive.sha256sum")
  tar -xzf "$work/$archive" -C "$work"
  install -m 0755 "$work/$os-$arch/helm" "$dest/helm"
fi
echo "$build" > "$stamp"
"$dest/helm" version --short
