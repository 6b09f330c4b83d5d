#!/usr/bin/env bash
# A single-node Kubernetes cluster on this Linux machine, without Docker or a container registry:
#   scripts/local-cluster.sh up            build (or take from the cache) and start the cluster
#   scripts/local-cluster.sh down          stop everything `up` started; the cluster's data stays
#   scripts/local-cluster.sh reset         down, then delete the cluster's data (not the images)
#   scripts/local-cluster.sh status        what runs, the kubeconfig and the ingress URL
#   scripts/local-cluster.sh load-images IMAGE...   copy podman images into the cluster's containerd
#   scripts/local-cluster.sh preload IMAGE...       the same while the cluster is stopped, ahead of `up`
#   scripts/local-cluster.sh build         only build the binaries into the cache
#   scripts/local-cluster.sh env           KUBECONFIG=... and the ingress address, for `eval`
#
# Every program is a process of this machine, started and stopped by PID: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd (its own config, root, state and socket),
# the kubelet, kube-proxy (iptables), CoreDNS (the cluster DNS, 10.96.0.10), the KubeRay operator,
# local-path-provisioner (the default StorageClass) and an ingress controller driving nginx.
# Kubernetes, etcd, CoreDNS, the KubeRay operator, local-path-provisioner and crictl are built from
# the Go module proxy at the versions pinned below, into ~/.cache/sfmlops-cluster keyed by version,
# with Go caches of their own under it (about 14 GB: modules and compiled packages) that are
# deleted once every program is built, since `up` needs only the binaries. The rest
# (containerd, runc, the CNI plugins, iptables, nginx) comes from Debian
# (scripts/install-system-deps.sh cluster). Runs as root: it creates a bridge, iptables rules,
# cgroups and mounts.
#
# Addresses: the API server listens on 127.0.0.1:16443, the node (kubelet, pods' gateway, NodePorts)
# is 10.244.0.1 on the bridge cni0, pods get 10.244.0.0/24, Services 10.96.0.0/24. Nothing listens
# on an address outside this machine. The ingress listens on 127.0.0.1:$SFMLOPS_INGRESS_PORT.
#
# Environment: SFMLOPS_CLUSTER_DIR (the cluster's data, default /var/lib/sfmlops-cluster),
# SFMLOPS_CLUSTER_CACHE (binaries and images, default ~/.cache/sfmlops-cluster),
# SFMLOPS_INGRESS_PORT (default 18080).
set -euo pipefail

KUBERNETES_VERSION=v1.34.4
ETCD_VERSION=v3.6.8
COREDNS_VERSION=v1.14.7
LOCAL_PATH_PROVISIONER_VERSION=v0.0.30
CRI_TOOLS_VERSION=v1.34.0
# Traefik 3.7 requires a nested module the proxy does not serve; 3.6 builds from the proxy.
TRAEFIK_VERSION=v3.6.12
# The Gateway API version Traefik is built against: its CRDs come from that module.
GATEWAY_API_VERSION=v1.4.0

root=$(cd "$(dirname "$0")/.." && pwd)
# The KubeRay operator's version is the chart pin of helm-releases.env: one version everywhere.
KUBERAY_VERSION=v$(sed -n 's/^KUBERAY_OPERATOR_VERSION=//p' "$root/helm-releases.env")
PROMETHEUS_OPERATOR_VERSION=$(sed -n 's/^PROMETHEUS_OPERATOR_VERSION=//p' "$root/helm-releases.env")
cache=${SFMLOPS_CLUSTER_CACHE:-$HOME/.cache/sfmlops-cluster}
state=${SFMLOPS_CLUSTER_DIR:-/var/lib/sfmlops-cluster}
ingress_port=${SFMLOPS_INGRESS_PORT:-18080}

node_name=sfmlops-node
node_ip=10.244.0.1
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/24
dns_ip=10.96.0.10
api_port=16443
etcd_port=12379
bridge=cni0

# "-plugins": only the plugins of the Corefile (build_coredns).
coredns_bin=$cache/coredns-$COREDNS_VERSION-plugins
# Kubernetes' commands, etcd, the KubeRay operator, local-path-provisioner and crictl: built
# together from one module (build_programs), so one folder named by all their versions.
programs_bin=$cache/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kuberay-$KUBERAY_VERSION-local-path-$LOCAL_PATH_PROVISIONER_VERSION-crictl-$CRI_TOOLS_VERSION
# Their module's source folder while they build.
programs_src=$cache/src/programs
# Its binaries, each with the package it is built from (etcd's main is its server module).
programs=(
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler
  kubelet=k8s.io/kubernetes/cmd/kubelet
  kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
  kubectl=k8s.io/kubernetes/cmd/kubectl
  etcd=go.etcd.io/etcd/server/v3
  ray-operator=github.com/ray-project/kuberay/ray-operator
  local-path-provisioner=github.com/rancher/local-path-provisioner
  crictl=sigs.k8s.io/cri-tools/cmd/crictl
)
# "-no-dns-providers": lego without its DNS providers (build_traefik).
traefik_bin=$cache/traefik-$TRAEFIK_VERSION-no-dns-providers
# The CRDs `up` applies, from the modules that ship them: kept here, `up` needs no Go.
kuberay_crds=$cache/crds/kuberay-$KUBERAY_VERSION
gateway_api_crds=$cache/crds/gateway-api-$GATEWAY_API_VERSION
# Not used by the cluster itself: scripts/deploy.sh's local mode reads them here.
prometheus_operator_crds=$cache/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION
pki=$state/pki
run=$state/run
logs=$state/logs
containerd_dir=$state/containerd
containerd_sock=$containerd_dir/containerd.sock
admin_kubeconfig=$state/admin.kubeconfig
pause_image=localhost/sfmlops/pause:1
helper_image=localhost/sfmlops/busybox:1

[ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"
export PATH="$programs_bin:$PATH"

log() { echo "local-cluster: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# --- building ------------------------------------------------------------------------------

# The directory of a module version in the module cache (downloading it if needed).
module_dir() {
  go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# Kubernetes, etcd, the KubeRay operator, local-path-provisioner and crictl build from one module
# of our own, so that the libraries they share (client-go, apimachinery, api, grpc, protobuf,
# Prometheus' client, ...) compile once: Go reuses a compiled package only when the versions of
# everything it imports are the same too, and each program's own go.mod pins other versions (the
# operator client-go v0.34.1, crictl v0.34.0-rc.2, local-path-provisioner v0.30.0). Minimal
# version selection gives each library one version for all five, the highest any of them needs.
# Kubernetes' go.mod replaces its staging modules with folders of its own repository, so it
# cannot be required as it is: the module replaces each staging module with the version
# published for it instead (v0.34.4 for v1.34.4), which every program then uses.
# CoreDNS 1.14.7 needs client-go v0.35 and Traefik pins its own versions: modules of their own.
write_programs_module() {
  local src=$1 modfile staging_version=v0.${KUBERNETES_VERSION#v1.}
  modfile=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  {
    printf 'module sfmlops.local/cluster-programs\n\ngo 1.24.0\n\nrequire (\n'
    printf '\t%s %s\n' k8s.io/kubernetes "$KUBERNETES_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" \
      github.com/ray-project/kuberay/ray-operator "$KUBERAY_VERSION" \
      github.com/rancher/local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
      sigs.k8s.io/cri-tools "$CRI_TOOLS_VERSION"
    printf ')\n\n'
    sed -n "s#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 $staging_version#p" "$modfile"
  } >"$src/go.mod"
  # The build tag keeps the file out of every build; `go mod tidy` still follows its imports.
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "%s"\n' "${programs[@]#*=}"
    printf ')\n'
  } >"$src/tools.go"
}

# Every binary of build_programs is in its folder.
programs_built() {
  local program
  for program in "${programs[@]%%=*}"; do
    [ -x "$programs_bin/$program" ] || return 1
  done
}

build_programs() {
  programs_built && return 0
  log "building Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, KubeRay $KUBERAY_VERSION," \
    "local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION and crictl $CRI_TOOLS_VERSION"
  mkdir -p "$programs_src" "$programs_bin"
  write_programs_module "$programs_src"
  (cd "$programs_src" && go mod tidy)
  local ldflags="-s -w" package minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $package.gitVersion=$KUBERNETES_VERSION -X $package.gitMajor=1"
    ldflags+=" -X $package.gitMinor=$minor -X $package.gitTreeState=clean"
  done
  # crictl first: `preload` (make test's background image chain) waits for it, then copies the
  # images into the cluster's image store while the rest compiles; the packages it compiles are
  # not compiled again for the others.
  [ -x "$programs_bin/crictl" ] || build_programs_step "$ldflags" crictl
  build_programs_step "$ldflags" kube-apiserver kube-controller-manager kube-scheduler kubelet \
    kube-proxy kubectl etcd ray-operator
  # A `go build` of its own: it imports logrus as github.com/Sirupsen/logrus, the others as
  # github.com/sirupsen/logrus, and one `go build` refuses two paths that differ only in case.
  build_programs_step "$ldflags" local-path-provisioner
}

# One `go build` of the programs' module into the programs' folder. Args: the linker flags, the
# binaries' names (of `programs`).
build_programs_step() {
  local ldflags=$1 out=$programs_bin name entry packages=()
  shift
  for name in "$@"; do
    for entry in "${programs[@]}"; do
      [ "${entry%%=*}" = "$name" ] && packages+=("${entry#*=}")
    done
  done
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  (cd "$programs_src" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ldflags" \
    -o "$out.tmp/" "${packages[@]}")
  # Moved one by one (a rename: a binary in the folder is whole); `go build` names a binary
  # after its package's path, so etcd's (go.etcd.io/etcd/server/v3) is `server`.
  for name in "$@"; do
    if [ "$name" = etcd ]; then mv "$out.tmp/server" "$out/etcd"; else mv "$out.tmp/$name" "$out/"; fi
  done
  rm -rf "$out.tmp"
}

# Builds one program from a module of our own, unless its binary is in the cache. Args: its name
# and version (for the log and the source folder), its binary, the function that writes the
# module's files into the folder it is given, the package `go build` builds there.
build_go_program() {
  local name=$1 version=$2 binary=$3 write_module=$4 package=$5
  [ -x "$binary" ] && return 0
  log "building $name $version"
  local src=$cache/src/$name-$version out=${binary%/*}
  mkdir -p "$src"
  "$write_module" "$src"
  (cd "$src" && go mod tidy)
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  (cd "$src" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" \
    -o "$out.tmp/${binary##*/}" "$package")
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# CoreDNS with the plugins the Corefile of start_coredns uses, nothing else: its own main
# compiles half the packages of the full build, whose other plugins bring the SDKs of cloud DNS
# services (Route 53, Azure, Cloud DNS) and more.
build_coredns() {
  build_go_program coredns "$COREDNS_VERSION" "$coredns_bin/coredns" write_coredns_module .
}

write_coredns_module() {
  printf 'module sfmlops.local/coredns\n\ngo 1.24.0\n\nrequire github.com/coredns/coredns %s\n' \
    "$COREDNS_VERSION" >"$1/go.mod"
  cat >"$1/main.go" <<'EOF'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() {
	// The plugins keep their places in CoreDNS's order, which decides how they chain.
	kept := map[string]bool{"bind": true, "cache": true, "errors": true, "health": true,
		"kubernetes": true, "ready": true, "reload": true, "template": true}
	directives := []string{}
	for _, name := range dnsserver.Directives {
		if kept[name] {
			directives = append(directives, name)
		}
	}
	dnsserver.Directives = directives
	coremain.Run()
}
EOF
}

# Copies a folder of a module (downloaded if needed) to the cache. Args: module@version, the
# folder in the module, the copy.
keep_module_folder() {
  local module=$1 folder=$2 copy=$3
  [ -d "$copy" ] && return 0
  rm -rf "$copy.tmp" && mkdir -p "$(dirname "$copy")"
  cp -r "$(module_dir "$module")/$folder" "$copy.tmp"
  chmod -R u+w "$copy.tmp"
  mv "$copy.tmp" "$copy"
}

# Traefik's go.mod replaces three modules with forks; `go install` refuses any replace, so a
# module of our own carries them. It also replaces lego (the ACME client) with a copy whose
# DNS-provider factory knows none: the SDKs of the ~150 DNS services it imports were a third of
# the compiled source, for the DNS-01 challenge a local cluster never answers (an ACME resolver
# naming a DNS provider fails with "unrecognized DNS provider").
build_traefik() {
  local out=$traefik_bin
  [ -x "$out/traefik" ] && return 0
  log "building Traefik $TRAEFIK_VERSION"
  local src=$cache/src/traefik-$TRAEFIK_VERSION modfile
  mkdir -p "$src"
  modfile=$(go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" |
    sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  # Traefik's own requirements, at the versions its release pins: `go mod tidy` would instead
  # look up the newest version of every module that only its dependencies' tests import (a
  # build that changes with the proxy's content, and each of those modules downloaded).
  {
    printf 'module sfmlops.local/traefik\n\ngo 1.25.0\n\nrequire github.com/traefik/traefik/v3 %s\n\n' "$TRAEFIK_VERSION"
    sed -n '/^require (/,/^)/p' "$modfile"
    sed -n '/^replace (/,/^)/p' "$modfile"
  } >"$src/go.mod"
  local lego
  lego=$(cd "$src" && GOFLAGS="$GOFLAGS -mod=mod" go list -m -f '{{.Version}}' github.com/go-acme/lego/v4)
  lego=$(module_dir "github.com/go-acme/lego/v4@$lego")
  [ -d "$lego" ] || return 1
  rm -rf "$src/lego" && cp -r "$lego" "$src/lego" && chmod -R u+w "$src/lego"
  cat >"$src/lego/providers/dns/zz_gen_dns_providers.go" <<'EOF'
package dns

import (
	"fmt"

	"github.com/go-acme/lego/v4/challenge"
)

// NewDNSChallengeProviderByName knows no DNS provider in this build.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("unrecognized DNS provider: %s", name)
}
EOF
  printf '\nreplace github.com/go-acme/lego/v4 => ./lego\n' >>"$src/go.mod"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=mod" nice -n 10 go build -trimpath \
    -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    -o "$out.tmp/traefik" github.com/traefik/traefik/v3/cmd/traefik)
  [ -x "$out.tmp/traefik" ] && rm -rf "$out" && mv "$out.tmp" "$out"
}

build() {
  mkdir -p "$cache"
  # One build at a time (a background build of `make test` and `up`): the second waits, then
  # finds the programs built.
  local lock
  exec {lock}>"$cache/build.lock"
  flock "$lock"
  if ! { programs_built && [ -x "$coredns_bin/coredns" ] && [ -x "$traefik_bin/traefik" ] &&
    [ -d "$kuberay_crds" ] &&
    [ -d "$gateway_api_crds" ] && [ -d "$prometheus_operator_crds" ]; }; then
    command -v go >/dev/null 2>&1 || die "Go is needed to build the cluster's programs (https://go.dev/dl)"
    # Go caches of these builds only (Go's defaults would keep ~14 GB that every later Go build
    # on the machine carries); -modcacherw lets the module cache be deleted like any folder.
    export GOCACHE=$cache/go/build GOMODCACHE=$cache/go/mod
    GOFLAGS="$(go env GOFLAGS) -modcacherw"
    export GOFLAGS
    # crictl first (build_programs). `up` needs them all.
    build_programs
    build_coredns
    keep_module_folder "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" \
      config/crd/bases "$kuberay_crds"
    # Those of the Gateway API version Traefik is built against.
    keep_module_folder "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" config/crd/standard \
      "$gateway_api_crds"
    # For scripts/deploy.sh's local mode (the chart's ServiceMonitor, PodMonitor, PrometheusRule).
    keep_module_folder "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
      example/prometheus-operator-crd "$prometheus_operator_crds"
    # The cluster is useful without an ingress (kubectl port-forward), so a failed Traefik
    # build is reported, not fatal; the caches and sources then stay for the next try.
    if build_traefik && [ -x "$traefik_bin/traefik" ]; then
      rm -rf "$cache/go" "$cache/src"
    else
      log "Traefik did not build: no ingress controller (reach Services with kubectl port-forward)"
    fi
  fi
  prune_cache
  # The daemons `up` starts next must not inherit the lock.
  exec {lock}>&-
}

# Removes what earlier versions of this script left in the cache: the folders of other pins (a
# changed version builds beside the old one) and of earlier builds (Kubernetes, etcd and the
# add-ons each in a folder of its own, built from modules of their own). Only names this script
# gives are looked at.
prune_cache() {
  local entry current=" $programs_bin $coredns_bin $traefik_bin $kuberay_crds "
  current+="$gateway_api_crds $prometheus_operator_crds $cache/images/pause-1.tar $cache/images/busybox-1.tar "
  for entry in "$cache"/{kubernetes,etcd,coredns,traefik}-v* "$cache"/addons-* \
    "$cache"/crds/{kuberay,gateway-api,prometheus-operator}-v* "$cache"/images/{pause,busybox}-*.tar; do
    [ -e "$entry" ] || continue
    [[ "$current" == *" $entry "* ]] && continue
    log "removing $entry (not read by this version of the script)"
    rm -rf "$entry"
  done
}

# --- images without a registry -------------------------------------------------------------

# Writes an OCI image archive (one uncompressed layer) of a root filesystem folder, for
# `ctr images import`. Args: the image name, the folder, the entrypoint as JSON, the archive.
oci_archive() {
  local name=$1 rootfs=$2 entrypoint=$3 archive=$4 work
  work=$(mktemp -d)
  mkdir -p "$work/blobs/sha256"
  tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
  local layer_digest layer_size config config_digest manifest manifest_digest
  layer_digest=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  layer_size=$(stat -c %s "$work/layer.tar")
  mv "$work/layer.tar" "$work/blobs/sha256/$layer_digest"
  config=$(printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entrypoint" "$layer_digest")
  config_digest=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
  printf '%s' "$config" >"$work/blobs/sha256/$config_digest"
  manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
    "$config_digest" "${#config}" "$layer_digest" "$layer_size")
  manifest_digest=$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
  printf '%s' "$manifest" >"$work/blobs/sha256/$manifest_digest"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "${#manifest}" "$name" "${name##*:}" >"$work/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
  tar -C "$work" -cf "$archive" oci-layout index.json blobs
  rm -rf "$work"
}

# The pod sandbox image: a static program that waits for signals and reaps orphaned children.
build_pause_image() {
  local archive=$cache/images/pause-1.tar
  [ -s "$archive" ] && return 0
  local work
  work=$(mktemp -d)
  cat >"$work/pause.c" <<'EOF'
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number) { (void)signal_number; _exit(0); }

static void reap(int signal_number) {
  (void)signal_number;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
EOF
  mkdir -p "$work/rootfs" "$cache/images"
  gcc -Os -static -o "$work/rootfs/pause" "$work/pause.c"
  strip "$work/rootfs/pause"
  oci_archive "$pause_image" "$work/rootfs" '["/pause"]' "$archive.tmp"
  mv "$archive.tmp" "$archive"
  rm -rf "$work"
}

# The image of local-path-provisioner's helper pods, which create and delete volume folders
# with a shell script: Debian's static busybox, every applet linked (a small image for checks).
build_helper_image() {
  local archive=$cache/images/busybox-1.tar
  [ -s "$archive" ] && return 0
  local work command
  work=$(mktemp -d)
  mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$cache/images"
  ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is not static (apt-get install busybox-static)"
  cp /bin/busybox "$work/rootfs/bin/busybox"
  for command in $(/bin/busybox --list); do
    [ -e "$work/rootfs/bin/$command" ] || ln -s busybox "$work/rootfs/bin/$command"
  done
  oci_archive "$helper_image" "$work/rootfs" '["/bin/sh"]' "$archive.tmp"
  mv "$archive.tmp" "$archive"
  rm -rf "$work"
}

ctr_k8s() { ctr --address "$containerd_sock" --namespace k8s.io "$@"; }

import_base_images() {
  build_pause_image
  build_helper_image
  local image archive
  for image in "$pause_image=$cache/images/pause-1.tar" "$helper_image=$cache/images/busybox-1.tar"; do
    archive=${image#*=}
    ctr_k8s images ls -q | grep -qxF "${image%%=*}" || ctr_k8s images import "$archive" >/dev/null
  done
}

# --- certificates and kubeconfigs ----------------------------------------------------------

# Issues a client/server certificate signed by the cluster CA.
# Args: file stem, subject (/CN=.../O=...), subjectAltName ("" for none).
issue_certificate() {
  local stem=$1 subject=$2 san=$3
  [ -s "$pki/$stem.crt" ] && return 0
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$stem.key" -subj "$subject" \
    -out "$pki/$stem.csr" 2>/dev/null
  local extensions="$pki/$stem.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$extensions"
  openssl x509 -req -in "$pki/$stem.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$extensions" -out "$pki/$stem.crt" 2>/dev/null
  rm -f "$pki/$stem.csr" "$extensions"
}

# Writes a kubeconfig with a client certificate. Args: file, certificate stem, server URL.
write_kubeconfig() {
  local file=$1 stem=$2 server=$3
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sfmlops-local
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: $stem
  user:
    client-certificate: $pki/$stem.crt
    client-key: $pki/$stem.key
contexts:
- name: sfmlops-local
  context: {cluster: sfmlops-local, user: $stem}
current-context: sfmlops-local
EOF
}

make_certificates() {
  mkdir -p "$pki"
  chmod 700 "$pki"
  if [ ! -s "$pki/ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -days 3650 \
      -subj "/CN=sfmlops-local-ca" -out "$pki/ca.crt" 2>/dev/null
  fi
  [ -s "$pki/service-account.key" ] || openssl genrsa -out "$pki/service-account.key" 2048 2>/dev/null
  [ -s "$pki/service-account.pub" ] ||
    openssl rsa -in "$pki/service-account.key" -pubout -out "$pki/service-account.pub" 2>/dev/null
  issue_certificate apiserver "/CN=kube-apiserver" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$node_ip,IP:10.96.0.1"
  issue_certificate admin "/O=system:masters/CN=sfmlops-admin" ""
  issue_certificate apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" ""
  issue_certificate controller-manager "/CN=system:kube-controller-manager" ""
  issue_certificate scheduler "/CN=system:kube-scheduler" ""
  issue_certificate kube-proxy "/CN=system:kube-proxy" ""
  issue_certificate kubelet-client "/O=system:nodes/CN=system:node:$node_name" ""
  issue_certificate kubelet-serving "/CN=$node_name" "DNS:$node_name,IP:$node_ip"
  local api="https://127.0.0.1:$api_port"
  write_kubeconfig "$admin_kubeconfig" admin "$api"
  write_kubeconfig "$state/controller-manager.kubeconfig" controller-manager "$api"
  write_kubeconfig "$state/scheduler.kubeconfig" scheduler "$api"
  write_kubeconfig "$state/kube-proxy.kubeconfig" kube-proxy "$api"
  write_kubeconfig "$state/kubelet.kubeconfig" kubelet-client "$api"
}

# --- processes -----------------------------------------------------------------------------

# Starts a program in the background, its output in logs/NAME.log and its PID in run/NAME.pid.
start_process() {
  local name=$1
  shift
  if process_running "$name"; then return 0; fi
  mkdir -p "$run" "$logs"
  # The daemon must not inherit the state lock (it would hold it for its whole life).
  if [ -n "${state_lock:-}" ]; then
    setsid "$@" >>"$logs/$name.log" 2>&1 </dev/null {state_lock}>&- &
  else
    setsid "$@" >>"$logs/$name.log" 2>&1 </dev/null &
  fi
  echo $! >"$run/$name.pid"
}

# One command at a time changes the cluster (up, down, reset, load-images, preload): a `preload`
# that `make test` runs in the background holds `up` back until it is done, and the other way
# round. The lock file sits beside the cluster's folder, so taking it creates nothing inside.
lock_state() {
  # Without root every one of them refuses to run (saying why) or does nothing.
  [ "$(id -u)" = 0 ] || return 0
  mkdir -p "$(dirname "$state")"
  exec {state_lock}>"$state.lock"
  flock "$state_lock"
}

process_running() {
  local pid
  pid=$(cat "$run/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

# Stops programs started by start_process, all at once: SIGTERM to each, then SIGKILL to those
# still running after a grace period (one 10 s grace for all, not one after the other).
stop_process() {
  local name pid pids=() waited=0 alive
  for name in "$@"; do
    pid=$(cat "$run/$name.pid" 2>/dev/null) || continue
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  while [ $waited -lt 100 ]; do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1 && break; done
    [ $alive = 1 ] || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for name in "$@"; do rm -f "$run/$name.pid"; done
}

# Waits until a command succeeds. Args: what (for the error), seconds, command...
wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what not ready after ${seconds}s (logs: $logs)"
    sleep 0.5
  done
}

kubectl_admin() { kubectl --kubeconfig "$admin_kubeconfig" "$@"; }

# Waits until the CRDs of a file are Established. `kubectl wait --for condition=...` fails at
# once, instead of waiting, when it reads a CRD the API server has not given a status yet
# (".status.conditions accessor error: <nil> is of the type <nil>", kubernetes issue 66439:
# seen on a fresh machine's first `up`), so each attempt is retried until the deadline.
# Args: what (for the error), file.
wait_established() {
  wait_for "$1" 120 kubectl_admin wait --for condition=Established --timeout 10s -f "$2"
}

# --- up ------------------------------------------------------------------------------------

setup_network() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$node_ip/24" dev "$bridge"
  fi
  ip link set "$bridge" up
  # Pods reach Services through the host's routing: kube-proxy's DNAT, then forwarding to the pod.
  if [ ! -s "$run/ip_forward" ]; then cat /proc/sys/net/ipv4/ip_forward >"$run/ip_forward"; fi
  echo 1 >/proc/sys/net/ipv4/ip_forward
  mkdir -p "$state/cni"
  cat >"$state/cni/10-sfmlops.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "sfmlops",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$node_ip"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$state/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_etcd() {
  start_process etcd "$programs_bin/etcd" --name "$node_name" --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "$node_name=http://127.0.0.1:$((etcd_port + 1))" \
    --listen-metrics-urls "http://127.0.0.1:$((etcd_port + 2))" \
    --quota-backend-bytes 2147483648 --log-level warn
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$((etcd_port + 2))/health"
}

start_control_plane() {
  start_process kube-apiserver kube-apiserver \
    --bind-address=127.0.0.1 --secure-port=$api_port --advertise-address=$node_ip \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --service-cluster-ip-range=$service_cidr --service-node-port-range=30000-30100 \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --client-ca-file="$pki/ca.crt" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/service-account.pub" \
    --service-account-signing-key-file="$pki/service-account.key" \
    --enable-admission-plugins=NodeRestriction \
    --profiling=false --v=1
  wait_for kube-apiserver 120 curl -fsS --cacert "$pki/ca.crt" \
    --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$api_port/readyz"
  # In-cluster clients (the KubeRay operator's pods, anything using the kubernetes Service)
  # reach the API server through the node address.
  start_process apiserver-forward socat "TCP-LISTEN:$api_port,bind=$node_ip,fork,reuseaddr" \
    "TCP:127.0.0.1:$api_port"
  start_process kube-controller-manager kube-controller-manager \
    --kubeconfig="$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$state/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/service-account.key" \
    --service-cluster-ip-range=$service_cidr --cluster-cidr=$pod_cidr --allocate-node-cidrs=false \
    --controllers='*,-cloud-node-lifecycle' --profiling=false --v=1
  start_process kube-scheduler kube-scheduler \
    --kubeconfig="$state/scheduler.kubeconfig" \
    --authentication-kubeconfig="$state/scheduler.kubeconfig" \
    --authorization-kubeconfig="$state/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
}

start_containerd() {
  mkdir -p "$containerd_dir"
  cat >"$containerd_dir/config.toml" <<EOF
version = 2
root = "$containerd_dir/root"
state = "$containerd_dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$containerd_sock"

[ttrpc]
  address = "$containerd_sock.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni"
EOF
  start_process containerd containerd --config "$containerd_dir/config.toml"
  wait_for containerd 60 ctr --address "$containerd_sock" version
}

start_kubelet() {
  process_running kubelet && return 0
  mkdir -p "$state/kubelet"
  cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$containerd_sock
podLogsDir: $state/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
clusterDomain: cluster.local
clusterDNS: [$dns_ip]
serializeImagePulls: false
# Thresholds for a small or busy disk, in bytes: the defaults (15% free; even 2% is 5 GB of a
# 250 GB disk) evict pods and delete images on a shared build machine long before it is full.
evictionHard: {memory.available: 200Mi, nodefs.available: 1Gi, imagefs.available: 1Gi, nodefs.inodesFree: 2%}
# No image garbage collection by disk usage: the images are loaded from podman's store, not
# pulled, so one deleted cannot come back by itself (load-images replaces stale ones instead).
imageGCHighThresholdPercent: 100
# A disk that filled for a moment (an image import, a build beside the cluster) taints the node
# for this long after it recovered: 30 s instead of 5 minutes.
evictionPressureTransitionPeriod: 30s
EOF
  start_process kubelet kubelet --config="$state/kubelet.yaml" --kubeconfig="$state/kubelet.kubeconfig" \
    --root-dir="$state/kubelet" --node-ip=$node_ip --hostname-override=$node_name --v=1
}

start_kube_proxy() {
  # kube-proxy exits when its configuration file changes: a second `up` leaves it alone.
  process_running kube-proxy && return 0
  cat >"$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
clusterCIDR: $pod_cidr
hostnameOverride: $node_name
nodePortAddresses: [$node_ip/32]
conntrack: {maxPerCore: 0}
iptables: {localhostNodePorts: false}
EOF
  start_process kube-proxy kube-proxy --config="$state/kube-proxy.yaml" --v=1
}

# CoreDNS runs on the node and serves the cluster domain from the API; the kube-dns Service
# (10.96.0.10) points at it through an EndpointSlice. It forwards nothing: this machine's pods
# only need names inside the cluster.
start_coredns() {
  # Names outside the cluster get NXDOMAIN at once, not a timeout or SERVFAIL.
  cat >"$state/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $node_ip
    errors
    health 127.0.0.1:18181
    ready 127.0.0.1:18182
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $admin_kubeconfig
        pods insecure
        ttl 30
    }
    cache 30
    reload
}
.:53 {
    bind $node_ip
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
  start_process coredns "$coredns_bin/coredns" -conf "$state/Corefile"
  kubectl_admin apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $dns_ip
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: sfmlops-local-cluster}
addressType: IPv4
endpoints:
- addresses: [$node_ip]
  conditions: {ready: true}
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
EOF
  wait_for coredns 60 curl -fsS http://127.0.0.1:18182/ready
}

start_kuberay() {
  kubectl_admin apply --server-side --force-conflicts -f "$kuberay_crds" >/dev/null
  wait_established "KubeRay CRDs" "$kuberay_crds"
  KUBECONFIG=$admin_kubeconfig start_process kuberay-operator "$programs_bin/ray-operator" \
    -metrics-addr 127.0.0.1:18083 -health-probe-bind-address 127.0.0.1:18084 \
    -enable-leader-election=false -log-stdout-encoder console
  wait_for "KubeRay operator" 60 curl -fsS http://127.0.0.1:18084/readyz
}

# local-path-provisioner makes a folder under $state/volumes for each PersistentVolumeClaim of
# the default StorageClass, through a helper pod on the node.
start_storage() {
  mkdir -p "$state/volumes"
  kubectl_admin apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-helper, namespace: local-path-storage}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$state/volumes"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata: {name: helper-pod}
    spec:
      priorityClassName: system-node-critical
      tolerations: [{key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}]
      containers:
      - {name: helper-pod, image: $helper_image, imagePullPolicy: Never}
EOF
  start_process local-path-provisioner "$programs_bin/local-path-provisioner" start \
    --kubeconfig "$admin_kubeconfig" --namespace local-path-storage \
    --configmap-name local-path-config --service-account-name local-path-helper \
    --helper-image "$helper_image"
}

node_ready() {
  [ "$(kubectl_admin get node $node_name \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

up() {
  [ "$(id -u)" = 0 ] || die "the cluster needs root (a bridge, iptables rules, cgroups, mounts)"
  "$root/scripts/install-system-deps.sh" cluster
  build
  local started=$SECONDS
  mkdir -p "$state" "$run" "$logs"
  make_certificates
  setup_network
  start_etcd
  start_control_plane
  start_containerd
  import_base_images
  start_kubelet
  start_kube_proxy
  start_coredns
  wait_for "node $node_name" 120 node_ready
  # The default ServiceAccount is what most pods run as; it appears shortly after the API.
  wait_for "default ServiceAccount" 60 kubectl_admin get serviceaccount default -n default
  start_storage
  start_kuberay
  start_ingress
  log "up in $((SECONDS - started))s"
  status
}

# --- down ----------------------------------------------------------------------------------

# The order matters: pod sandboxes go first, through containerd's CRI (network namespaces and
# CNI state), then the daemons, then what they leave in the kernel.
down() {
  [ "$(id -u)" = 0 ] || die "the cluster needs root"
  [ -d "$state" ] || return 0
  stop_process ingress-controller kuberay-operator local-path-provisioner coredns kube-proxy kubelet
  if process_running containerd; then
    local crictl=(
      "$programs_bin/crictl" --runtime-endpoint "unix://$containerd_sock" --timeout 30s
    )
    "${crictl[@]}" rmp --force --all >/dev/null 2>&1 || true
  fi
  stop_process containerd kube-scheduler kube-controller-manager apiserver-forward kube-apiserver
  # etcd last: the API server's shutdown may still write to it.
  stop_process etcd
  kill_leftover_shims
  kube-proxy --cleanup >/dev/null 2>&1 || true
  remove_kubelet_iptables_chains
  unmount_under "$state"
  if ip link show "$bridge" >/dev/null 2>&1; then ip link delete "$bridge"; fi
  if [ -s "$run/ip_forward" ]; then
    cat "$run/ip_forward" >/proc/sys/net/ipv4/ip_forward
    rm -f "$run/ip_forward"
  fi
  remove_pod_cgroups
}

# Container shims of our containerd (found by its socket on their command line) outlive it.
kill_leftover_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $containerd_sock" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

remove_kubelet_iptables_chains() {
  local tool table chain
  for tool in iptables ip6tables; do
    for table in filter nat mangle; do
      for chain in $("$tool" -t $table -S 2>/dev/null | sed -n 's/^-N \(KUBE-[A-Z0-9-]*\)$/\1/p'); do
        "$tool" -t $table -S 2>/dev/null | grep -- "-j $chain\b" | sed 's/^-A/-D/' |
          while read -r rule; do eval "$tool -t $table $rule" 2>/dev/null || true; done || true
      done
      for chain in $("$tool" -t $table -S 2>/dev/null | sed -n 's/^-N \(KUBE-[A-Z0-9-]*\)$/\1/p'); do
        "$tool" -t $table -F "$chain" 2>/dev/null || true
      done
      for chain in $("$tool" -t $table -S 2>/dev/null | sed -n 's/^-N \(KUBE-[A-Z0-9-]*\)$/\1/p'); do
        "$tool" -t $table -X "$chain" 2>/dev/null || true
      done
    done
  done
}

# Unmounts everything mounted below a folder, deepest first.
unmount_under() {
  local mountpoint
  awk -v prefix="$1/" 'index($5, prefix) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r mountpoint; do umount -l "$mountpoint" 2>/dev/null || true; done || true
}

# The kubelet puts every pod under a kubepods cgroup: whatever still runs there (a container
# whose shim died) is ours to end, then the folders go.
remove_pod_cgroups() {
  local controller pid
  for controller in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$controller" ] || continue
    find "$controller" -name cgroup.procs -exec cat {} + 2>/dev/null |
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done || true
  done
  for controller in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$controller" ] || continue
    find "$controller" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

reset() {
  down
  # The cluster's data, except containerd's image store (imported images take long to reload).
  rm -rf "$state/etcd" "$state/kubelet" "$state/pod-logs" "$state/volumes" "$state/cni/ipam" \
    "$state/pki" "$state"/*.kubeconfig "$logs"
  rm -rf "$state/containerd/state"
}

# --- ingress -------------------------------------------------------------------------------

# Traefik is the ingress controller: ingress-nginx needs OpenResty's Lua libraries (Debian ships
# only a few of them) and NGINX's own controller is not served by the module proxy. Traefik serves
# three kinds of routes, on 127.0.0.1:$ingress_port:
#   - Ingresses of class "nginx", through its ingress-nginx compatible provider (the nginx
#     annotations it knows: use-regex, CORS, auth, affinity, ssl-redirect, ...);
#   - Ingresses of class "traefik";
#   - Gateway API HTTPRoutes attached to the Gateway "local" of namespace "ingress".
start_ingress() {
  if [ ! -x "$traefik_bin/traefik" ]; then
    log "no ingress controller: kubectl port-forward --address 127.0.0.1 svc/NAME PORT reaches a Service"
    return 0
  fi
  kubectl_admin apply --server-side --force-conflicts -f "$gateway_api_crds" >/dev/null
  # A new CRD's kinds are served only once it is Established: applying the GatewayClass right
  # after the CRDs failed with "no matches for kind" on a fresh state.
  wait_established "Gateway API CRDs" "$gateway_api_crds"
  kubectl_admin apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: ingress}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: traefik}
spec: {controller: traefik.io/ingress-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: traefik}
spec: {controllerName: traefik.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: local, namespace: ingress}
spec:
  gatewayClassName: traefik
  listeners:
  - name: web
    protocol: HTTP
    port: $ingress_port
    allowedRoutes: {namespaces: {from: All}}
EOF
  cat >"$state/traefik.yaml" <<EOF
global: {checkNewVersion: false, sendAnonymousUsage: false}
entryPoints:
  web: {address: "127.0.0.1:$ingress_port"}
  traefik: {address: "127.0.0.1:18086"}
ping: {entryPoint: traefik}
log: {level: INFO}
providers:
  kubernetesIngress: {ingressClass: traefik}
  kubernetesIngressNGINX: {ingressClass: nginx, controllerClass: k8s.io/ingress-nginx}
  kubernetesGateway: {}
EOF
  KUBECONFIG=$admin_kubeconfig start_process ingress-controller "$traefik_bin/traefik" \
    --configFile="$state/traefik.yaml"
  # A cluster without its ingress is still useful (port-forward): report, do not fail `up`.
  (wait_for "ingress controller" 60 curl -fsS http://127.0.0.1:18086/ping) ||
    log "the ingress controller did not start; kubectl port-forward reaches Services meanwhile"
}

# --- status and images ---------------------------------------------------------------------

status() {
  local name running=0
  for name in etcd kube-apiserver apiserver-forward kube-controller-manager kube-scheduler containerd \
    kubelet kube-proxy coredns local-path-provisioner kuberay-operator ingress-controller; do
    if process_running "$name"; then
      printf '%-24s running (pid %s)\n' "$name" "$(cat "$run/$name.pid")"
      running=1
    fi
  done
  if [ $running = 0 ]; then
    echo "the local cluster is not running"
    return 0
  fi
  echo "KUBECONFIG=$admin_kubeconfig"
  echo "INGRESS_URL=http://127.0.0.1:$ingress_port"
  kubectl_admin get nodes -o wide 2>/dev/null || true
}

# Copies images from podman's store into the cluster's containerd. Args: image names.
# An image already there with the same ID is not copied again; older tags of the same
# repositories are removed (the kubelet does not collect images: see start_kubelet).
load_images() {
  [ $# -gt 0 ] || die "usage: $0 load-images IMAGE..."
  process_running containerd || die "the cluster is not running (scripts/local-cluster.sh up)"
  import_base_images
  local image id other missing=()
  for image in "$@"; do
    id=$(podman image inspect --format '{{.Id}}' "$image") || die "no podman image $image"
    [ "$(crictl_k8s inspecti -o go-template --template '{{.status.id}}' "$image" 2>/dev/null)" = "sha256:$id" ] &&
      continue
    # The same image under another name (`preload` loads the build's own tags): a new name for
    # it is enough, no copy.
    other=$(crictl_k8s inspecti -o go-template --template '{{range .status.repoTags}}{{.}} {{end}}' \
      "sha256:$id" 2>/dev/null | awk '{print $1}') || true
    if [ -n "$other" ]; then
      ctr_k8s images tag --force "$other" "$image" >/dev/null
      log "named: $image (loaded before as $other)"
    else
      missing+=("$image")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    podman save --multi-image-archive "${missing[@]}" | ctr_k8s images import - >/dev/null
    log "loaded: ${missing[*]}"
  fi
  remove_stale_images "$@"
  discard_unpacked_layers
}

# `load-images` while the cluster is stopped: containerd alone, started for the copy and
# stopped after, fills the image store that `reset` keeps, so the `load-images` after the next
# `up` only names what is there. `make test` runs it in the background while the earlier tiers
# run (a changed image took about 2 minutes to copy, on the cluster tier's own time before).
# Installs the node's Debian packages as `up` does (on a fresh machine containerd is not there
# yet, and without the preload the cluster tier spent 210 s copying images on its own time).
# Does nothing while the cluster runs (load-images is for that), without root or podman, or
# before `build` has made crictl.
preload() {
  if [ "$(id -u)" != 0 ] || ! command -v podman >/dev/null 2>&1 || [ ! -x "$programs_bin/crictl" ]; then
    log "preload: needs root, podman and crictl (\`build\` makes it); nothing loaded"
    return 0
  fi
  "$root/scripts/install-system-deps.sh" cluster
  if process_running containerd; then
    log "preload: the cluster runs; nothing loaded (load-images copies into it)"
    return 0
  fi
  mkdir -p "$state" "$run" "$logs"
  trap 'stop_process containerd' EXIT
  start_containerd
  load_images "$@"
}

# A `build` that runs (make test's other background chain, on a cold machine) makes crictl
# first: `preload` waits for it instead of loading nothing, and copies the images while the
# rest of the programs compile. Returns at once when crictl is there or no build runs.
wait_for_crictl() {
  local logged=""
  while [ ! -x "$programs_bin/crictl" ] && [ -e "$cache/build.lock" ] &&
    ! flock --nonblock "$cache/build.lock" true; do
    [ -n "$logged" ] || log "preload: waiting for the running build to make crictl"
    logged=1
    sleep 2
  done
}

crictl_k8s() { "$programs_bin/crictl" --runtime-endpoint "unix://$containerd_sock" "$@"; }

# What containerd's discard_unpacked_layers does for pulled images: once a layer is unpacked
# into a snapshot, containers run from the snapshot and its blob is dead weight (the images
# would take twice their size on disk).
discard_unpacked_layers() {
  local digests=()
  mapfile -t digests < <(ctr_k8s content ls | awk 'NR > 1 && /containerd.io\/uncompressed=/ { print $1 }')
  [ ${#digests[@]} -eq 0 ] || ctr_k8s content rm "${digests[@]}" >/dev/null
}

# Other tags of the repositories just loaded, e.g. last run's build: removed with their snapshots.
remove_stale_images() {
  local image loaded wanted=" $* " stale=()
  for image in $(ctr_k8s images ls -q); do
    case "$image" in sha256:*) continue ;; esac
    [[ "$wanted" == *" $image "* ]] && continue
    for loaded in "$@"; do
      [ "${image%:*}" = "${loaded%:*}" ] && stale+=("$image") && break
    done
  done
  [ ${#stale[@]} -eq 0 ] || ctr_k8s images rm "${stale[@]}" >/dev/null
}

# Before the lock: `up` and the others go on while it waits.
if [ "${1:-}" = preload ]; then wait_for_crictl; fi
case "${1:-}" in
up | down | reset | load-images | preload) lock_state ;;
esac
case "${1:-}" in
up) up ;;
down) down ;;
reset) reset ;;
status) status ;;
build) build ;;
env)
  echo "export KUBECONFIG=$admin_kubeconfig"
  echo "export SFMLOPS_INGRESS_URL=http://127.0.0.1:$ingress_port"
  ;;
load-images)
  shift
  load_images "$@"
  ;;
preload)
  shift
  preload "$@"
  ;;
*)
  sed -n '2,10p' "$0" >&2
  exit 2
  ;;
esac
