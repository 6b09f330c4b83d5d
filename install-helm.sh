#!/usr/bin/env bash
# Installs the pinned Helm used by every sfmlops deploy step (local cluster, CI, GKE workflow).
#   ./install-helm.sh [DEST_DIR]      default DEST_DIR: ~/.local/bin
# With Go on the PATH, Helm is built from its module (go install, checksummed by the Go sum
# database); otherwise the official release archive is downloaded and its SHA-256 verified.
set -euo pipefail

HELM_VERSION=v3.22.0
# The Kubernetes version of Helm's client-go (v0.37): what `helm lint` and `helm template`
# assume as the cluster version; the release archives are built with the same value.
HELM_KUBE_MINOR=37
dest=${1:-$HOME/.local/bin}
mkdir -p "$dest"

# A stamp beside the binary records what it was built as (the Kubernetes version is not in
# `helm version`), so a changed pin rebuilds it.
stamp="$dest/.helm-build"
build="$HELM_VERSION k8s-1.$HELM_KUBE_MINOR"
if [ -x "$dest/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$build" ]; then
  exit 0
fi

if command -v go >/dev/null 2>&1; then
  # The same ldflags as Helm's own Makefile: its version string and its default Kubernetes version.
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for package in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $package.k8sVersionMajor=1 -X $package.k8sVersionMinor=$HELM_KUBE_MINOR"
  done
  GOBIN=$(cd "$dest" && pwd) GOFLAGS=-trimpath go install -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
else
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
  esac
  os=$(uname -s | tr '[:upper:]' '[:lower:]')
  archive="helm-$HELM_VERSION-$os-$arch.tar.gz"
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
