#!/usr/bin/env bash
# The sfmlops deployment sequence, the same on a local cluster and on GKE (docs/deployment.md
# lists the commands it runs). Chart versions come from helm-releases.env.
#   scripts/deploy.sh up        namespaces, KubeRay operator, ingress-nginx, kube-prometheus-stack,
#                               Kafka, sfmlops-helm, Airflow
#   scripts/deploy.sh template  render every release against its real upstream chart into
#                               $SFMLOPS_RENDER_DIR (default ./rendered); needs the charts' hosts
#   scripts/deploy.sh down      uninstall the releases in reverse order (kept Secrets and volumes
#                               stay; add --purge to delete the namespaces too)
# With SFMLOPS_RELEASES=local, `up` and `down` install only what builds without chart
# repositories or public images (scripts/local-cluster.sh's cluster, or kind/minikube with the
# images loaded): KubeRay's CRDs (the operator runs beside the cluster, or installs itself
# otherwise) and the Prometheus Operator's CRDs from their Go modules, Kafka as one pod
# (tests/cluster/kafka.yaml, from the Kafka stand-in image), and sfmlops-helm with
# values-ray.yaml and values-local.yaml, PostgreSQL from its stand-in image (the stand-ins:
# scripts/compose-images.sh; SFMLOPS_LOCAL_KAFKA=0 leaves Kafka, the stream job and the producer out).
# Environment:
#   SFMLOPS_RELEASES        all (default) or local
#   SFMLOPS_IMAGE_REGISTRY  registry prefix of the sfmlops images (default: none, images loaded
#                           into the local cluster; local mode: localhost, podman's prefix)
#   SFMLOPS_IMAGE_TAG       tag of the sfmlops images (default: the current commit)
#   SFMLOPS_VALUES          extra values files for sfmlops-helm, space-separated (e.g. values-gke.yaml)
#   SFMLOPS_SET             extra key=value settings for sfmlops-helm, whitespace-separated
#   SFMLOPS_KAFKA_VALUES    extra values files for Kafka, space-separated (e.g. values-kafka-ha.yaml:
#                           three brokers, replication factor 3, min.insync.replicas=2)
#   SFMLOPS_HELM_TIMEOUT    how long `helm upgrade --install --wait` of sfmlops-helm may take
#                           (default 15m; its hooks include the first training)
#   SFMLOPS_NAMESPACE_POD_SECURITY  Pod Security level enforced in sfmlops's namespace (default
#                           restricted)
#   SFMLOPS_POD_SECURITY_ENFORCE    the level enforced in the other releases' namespaces instead of
#                           each one's own (Kafka, Airflow, KubeRay operator: restricted;
#                           ingress-nginx: baseline; monitoring: privileged, for node-exporter)
#   HELM                    the helm binary (default: helm on PATH; ./install-helm.sh installs it)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=helm-releases.env
source helm-releases.env

helm=${HELM:-helm}
mode=${SFMLOPS_RELEASES:-all}
case "$mode" in all | local) ;; *)
  echo "SFMLOPS_RELEASES must be all or local, not $mode" >&2
  exit 2
  ;;
esac
default_registry=""
[ "$mode" = local ] && default_registry=localhost
registry=${SFMLOPS_IMAGE_REGISTRY-$default_registry}
timeout=${SFMLOPS_HELM_TIMEOUT:-15m}
tag=${SFMLOPS_IMAGE_TAG:-$(git rev-parse --short=12 HEAD)}
read -r -a extra_values <<<"${SFMLOPS_VALUES:-}"
read -r -a extra_kafka_values <<<"${SFMLOPS_KAFKA_VALUES:-}"
read -r -a extra_settings <<<"$(echo "${SFMLOPS_SET:-}" | tr '\n' ' ')"

sfmlops_values=(-f sfmlops-helm/values.yaml -f values-ray.yaml)
[ "$mode" = local ] && sfmlops_values+=(-f values-local.yaml)
for file in "${extra_values[@]}"; do sfmlops_values+=(-f "$file"); done
for setting in "${extra_settings[@]}"; do sfmlops_values+=(--set "$setting"); done
sfmlops_values+=(--set "global.imageTag=$tag")
# Always set: an empty registry means the images loaded into the nodes, not the chart's default
# registry (where only the deploy workflow's images of a pushed commit exist).
sfmlops_values+=(--set "global.imageRegistry=$registry")

kafka_values=(-f values-kafka.yaml)
for file in "${extra_kafka_values[@]}"; do kafka_values+=(-f "$file"); done

# Airflow runs the image built from images/airflow (DAGs included) once that image exists.
airflow_values=(-f values-airflow.yaml)
if [ -f images/airflow/Dockerfile ]; then
  airflow_image=sfmlops-airflow
  [ -n "$registry" ] && airflow_image="$registry/$airflow_image"
  airflow_values+=(--set "images.airflow.repository=$airflow_image" --set "images.airflow.tag=$tag")
fi

repos() {
  "$helm" repo add kuberay "$KUBERAY_OPERATOR_REPO" --force-update >/dev/null
  "$helm" repo add ingress-nginx "$INGRESS_NGINX_REPO" --force-update >/dev/null
  "$helm" repo add apache-airflow "$AIRFLOW_REPO" --force-update >/dev/null
  "$helm" repo add prometheus-community "$KUBE_PROMETHEUS_REPO" --force-update >/dev/null
  "$helm" repo update >/dev/null
}

# One line per release: the arguments `helm upgrade --install` and `helm template` share.
release_kuberay=(kuberay-operator kuberay/"$KUBERAY_OPERATOR_CHART" --version "$KUBERAY_OPERATOR_VERSION" -n "$KUBERAY_OPERATOR_NAMESPACE" -f values-kuberay-operator.yaml)
release_ingress=(ingress-nginx ingress-nginx/"$INGRESS_NGINX_CHART" --version "$INGRESS_NGINX_VERSION" -n "$INGRESS_NGINX_NAMESPACE")
release_monitoring=("$KUBE_PROMETHEUS_RELEASE" prometheus-community/"$KUBE_PROMETHEUS_CHART" --version "$KUBE_PROMETHEUS_VERSION" -n "$KUBE_PROMETHEUS_NAMESPACE" -f values-kube-prometheus.yaml)
release_kafka=("$KAFKA_RELEASE" "$KAFKA_REPO/$KAFKA_CHART" --version "$KAFKA_VERSION" -n "$KAFKA_NAMESPACE" "${kafka_values[@]}")
release_sfmlops=("$SFMLOPS_RELEASE" ./sfmlops-helm -n "$SFMLOPS_NAMESPACE" "${sfmlops_values[@]}")
release_airflow=("$AIRFLOW_RELEASE" apache-airflow/"$AIRFLOW_CHART" --version "$AIRFLOW_VERSION" -n "$AIRFLOW_NAMESPACE" "${airflow_values[@]}")

# Pod Security Admission on every namespace: pods beyond the "restricted" profile are reported
# (warn, audit); the level refused outright is the second argument, else the namespace's own
# (enforce_level). Every pod of sfmlops's namespace meets restricted: the chart's, those KubeRay
# makes from the chart's RayCluster, Airflow's task pods (tests/deploy/test_security.py, and the
# cluster tier runs under it).
pod_security() {
  kubectl label namespace "$1" --overwrite >/dev/null \
    "pod-security.kubernetes.io/enforce=${2:-$(enforce_level "$1")}" \
    pod-security.kubernetes.io/warn=restricted \
    pod-security.kubernetes.io/audit=restricted
}

# The level each namespace enforces: restricted wherever the release's pods meet it (with the
# security contexts its values file sets), else the least that lets them run, with the reason.
# SFMLOPS_NAMESPACE_POD_SECURITY replaces sfmlops's own, SFMLOPS_POD_SECURITY_ENFORCE the other
# releases' (the way back if an upgraded upstream chart stops meeting its level).
enforce_level() {
  if [ "$1" = "$SFMLOPS_NAMESPACE" ]; then
    echo "${SFMLOPS_NAMESPACE_POD_SECURITY:-restricted}"
    return
  fi
  local level=restricted # Kafka, Airflow, the KubeRay operator
  case "$1" in
    # kube-prometheus-stack's node-exporter reads each node's /proc and /sys through hostPath
    # volumes, in the host's network and PID namespaces: baseline refuses all three, and its
    # DaemonSet would never become ready (helm --wait times out).
    "$KUBE_PROMETHEUS_NAMESPACE") echo privileged && return ;;
    # ingress-nginx's controller binds ports 80 and 443 as user 101 through file capabilities
    # on its nginx binaries (setcap cap_net_bind_service): gaining them needs privilege
    # escalation allowed, which restricted forbids (allowPrivilegeEscalation: false).
    "$INGRESS_NGINX_NAMESPACE") level=baseline ;;
  esac
  echo "${SFMLOPS_POD_SECURITY_ENFORCE:-$level}"
}

namespaces() {
  local namespace
  for namespace in "$SFMLOPS_NAMESPACE" "$KAFKA_NAMESPACE" "$AIRFLOW_NAMESPACE" \
    "$KUBE_PROMETHEUS_NAMESPACE" "$INGRESS_NGINX_NAMESPACE" "$KUBERAY_OPERATOR_NAMESPACE"; do
    kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    pod_security "$namespace"
  done
}

# Grafana's admin password: made once, kept in a Secret, never a chart default.
grafana_admin() {
  kubectl -n "$KUBE_PROMETHEUS_NAMESPACE" get secret sfmlops-grafana-admin >/dev/null 2>&1 && return 0
  kubectl -n "$KUBE_PROMETHEUS_NAMESPACE" create secret generic sfmlops-grafana-admin \
    --from-literal=admin-user=admin \
    --from-literal=admin-password="$(openssl rand -hex 16)" >/dev/null
}

# Kafka's SCRAM passwords, made once: the broker's Secret (kafka-sasl: the client users admin,
# producer and stream of values-kafka.yaml, in that order, and the broker and controller users)
# and the clients' copy in the sfmlops namespace (sfmlops-kafka-clients, kafkaAuth in the chart).
kafka_passwords() {
  kubectl -n "$KAFKA_NAMESPACE" get secret kafka-sasl >/dev/null 2>&1 && return 0
  local admin producer stream
  admin=$(openssl rand -hex 24) producer=$(openssl rand -hex 24) stream=$(openssl rand -hex 24)
  kubectl -n "$KAFKA_NAMESPACE" create secret generic kafka-sasl \
    --from-literal=client-passwords="$admin,$producer,$stream" \
    --from-literal=inter-broker-password="$(openssl rand -hex 24)" \
    --from-literal=controller-password="$(openssl rand -hex 24)" >/dev/null
  kubectl -n "$SFMLOPS_NAMESPACE" create secret generic sfmlops-kafka-clients \
    --from-literal=producer-password="$producer" \
    --from-literal=stream-password="$stream" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

up() {
  repos
  namespaces
  kafka_passwords
  "$helm" upgrade --install "${release_kuberay[@]}" --wait --timeout 10m
  "$helm" upgrade --install "${release_ingress[@]}" --wait --timeout 10m
  grafana_admin
  # Before sfmlops-helm: its ServiceMonitor and PodMonitor need the Prometheus Operator's CRDs.
  "$helm" upgrade --install "${release_monitoring[@]}" --wait --timeout 15m
  "$helm" upgrade --install "${release_kafka[@]}" --wait --timeout 10m
  # --wait: every Deployment and StatefulSet ready. The API is ready without a model (its
  # readiness is /health; /ready waits for the first champion, see docs/deployment.md).
  "$helm" upgrade --install "${release_sfmlops[@]}" --wait --timeout "$timeout"
  # After sfmlops-helm: it writes Airflow's metadata connection and keys into the namespace.
  "$helm" upgrade --install "${release_airflow[@]}" --timeout 15m
  kubectl -n "$SFMLOPS_NAMESPACE" get ingress
}

# The CRD-backed APIs the releases above provide before sfmlops-helm is installed: `helm
# template` sees no cluster, so it is told (the chart refuses to render without them).
crd_apis=(
  --api-versions ray.io/v1/RayCluster
  --api-versions monitoring.coreos.com/v1/ServiceMonitor
  --api-versions monitoring.coreos.com/v1/PodMonitor
  --api-versions monitoring.coreos.com/v1/PrometheusRule
)

template() {
  local out=${SFMLOPS_RENDER_DIR:-rendered}
  mkdir -p "$out"
  repos
  "$helm" template "${release_kuberay[@]}" >"$out/kuberay-operator.yaml"
  "$helm" template "${release_ingress[@]}" >"$out/ingress-nginx.yaml"
  "$helm" template "${release_monitoring[@]}" >"$out/kube-prometheus-stack.yaml"
  "$helm" template "${release_kafka[@]}" >"$out/kafka.yaml"
  "$helm" template "${release_sfmlops[@]}" "${crd_apis[@]}" >"$out/sfmlops.yaml"
  "$helm" template "${release_airflow[@]}" >"$out/airflow.yaml"
  echo "rendered every release into $out/"
}

down() {
  local release
  for release in "$AIRFLOW_RELEASE:$AIRFLOW_NAMESPACE" "$SFMLOPS_RELEASE:$SFMLOPS_NAMESPACE" \
    "$KAFKA_RELEASE:$KAFKA_NAMESPACE" "$KUBE_PROMETHEUS_RELEASE:$KUBE_PROMETHEUS_NAMESPACE" \
    "ingress-nginx:$INGRESS_NGINX_NAMESPACE" "kuberay-operator:$KUBERAY_OPERATOR_NAMESPACE"; do
    "$helm" uninstall "${release%%:*}" -n "${release##*:}" --ignore-not-found --wait
  done
  if [ "${1:-}" = --purge ]; then
    kubectl delete namespace "$SFMLOPS_NAMESPACE" "$KAFKA_NAMESPACE" "$AIRFLOW_NAMESPACE" \
      "$KUBE_PROMETHEUS_NAMESPACE" "$INGRESS_NGINX_NAMESPACE" "$KUBERAY_OPERATOR_NAMESPACE" --ignore-not-found
  fi
}

# --- local mode: what builds here, no chart repository, no public image ---------------------

local_kafka_manifest=tests/cluster/kafka.yaml
# Where scripts/local-cluster.sh keeps the CRDs it takes from their Go modules (the same
# versions: KUBERAY_OPERATOR_VERSION, PROMETHEUS_OPERATOR_VERSION of helm-releases.env).
cluster_crds=${SFMLOPS_CLUSTER_CACHE:-$HOME/.cache/sfmlops-cluster}/crds

# A folder of CRDs: the local cluster's copy, else the folder of their Go module, downloaded
# into $module_cache, a module cache of this run's own (Go's default one, ~/go/pkg/mod, would
# keep it). Args: the copy's name, module@version, the folder in the module.
crd_folder() {
  if [ -d "$cluster_crds/$1" ]; then
    echo "$cluster_crds/$1"
    return
  fi
  local go=go dir
  command -v go >/dev/null 2>&1 || go=/usr/local/go/bin/go
  dir=$(GOMODCACHE=$module_cache GOCACHE=$module_cache/build GOFLAGS=-modcacherw \
    "$go" mod download -json "$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/$3" ] || { echo "no $3 in the Go module $2" >&2; return 1; }
  echo "$dir/$3"
}

# KubeRay's CRDs (scripts/local-cluster.sh applies the same ones and runs the operator);
# Prometheus Operator's CRDs for the chart's ServiceMonitor, PodMonitor and PrometheusRule (no
# Prometheus runs locally: the objects are accepted and wait for one).
local_crds() {
  module_cache=$(mktemp -d)
  trap 'rm -rf "$module_cache"' EXIT
  local kuberay operator kind
  if ! kubectl get crd rayclusters.ray.io >/dev/null 2>&1; then
    kuberay=$(crd_folder "kuberay-v$KUBERAY_OPERATOR_VERSION" \
      "github.com/ray-project/kuberay/ray-operator@v$KUBERAY_OPERATOR_VERSION" config/crd/bases)
    kubectl apply --server-side --force-conflicts -f "$kuberay" >/dev/null
    echo "applied KubeRay's CRDs; a KubeRay operator must run for the RayCluster (scripts/local-cluster.sh runs one)" >&2
  fi
  operator=$(crd_folder "prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" \
    "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    example/prometheus-operator-crd)
  for kind in servicemonitors podmonitors prometheusrules; do
    kubectl apply --server-side --force-conflicts \
      -f "$operator/monitoring.coreos.com_$kind.yaml" >/dev/null
  done
  rm -rf "$module_cache"
}

# An image reference split into the chart's registry, repository and tag settings.
image_settings() {
  local prefix=$1 reference=$2
  local registry=${reference%%/*} rest=${reference#*/}
  echo "$prefix.image.registry=$registry $prefix.image.repository=${rest%:*} $prefix.image.tag=${rest##*:}"
}

# Kafka as one pod from the Kafka stand-in image (scripts/compose-images.sh kafka), in a namespace
# that enforces Pod Security "restricted" (the manifest meets it): the stream job and the producer
# then run; without it they are off (values-local.yaml). Applied without waiting: the broker starts
# while sfmlops-helm installs, and its first client, the producer, runs after the bootstrap.
local_kafka() {
  local image
  image=$(scripts/compose-images.sh kafka | tail -1)
  kubectl create namespace "$KAFKA_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  pod_security "$KAFKA_NAMESPACE" restricted
  sed "s|KAFKA_IMAGE|$image|" "$local_kafka_manifest" | kubectl -n "$KAFKA_NAMESPACE" apply -f - >/dev/null
}

kafka_ready() {
  kubectl -n "$KAFKA_NAMESPACE" rollout status statefulset/kafka --timeout 5m >/dev/null
}

up_local() {
  kubectl create namespace "$SFMLOPS_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  pod_security "$SFMLOPS_NAMESPACE"
  local_crds
  local settings=() postgres kafka_wait=""
  postgres=$(scripts/compose-images.sh postgres | tail -1)
  read -r -a settings <<<"$(image_settings postgresql "$postgres")"
  if [ "${SFMLOPS_LOCAL_KAFKA:-1}" = 1 ]; then
    local_kafka
    kafka_ready &
    kafka_wait=$!
    settings+=(stream.enabled=true producer.enabled=true)
  fi
  local args=() setting installed=0
  for setting in "${settings[@]}"; do args+=(--set "$setting"); done
  "$helm" upgrade --install "${release_sfmlops[@]}" "${args[@]}" --wait --timeout "$timeout" || installed=$?
  # A Kafka that does not come up is an error, not a quiet install without the stream job (and
  # the likely cause of a failed producer hook).
  if [ -n "$kafka_wait" ] && ! wait "$kafka_wait"; then
    echo "Kafka did not become ready (kubectl -n $KAFKA_NAMESPACE describe pod kafka-0);" \
      "SFMLOPS_LOCAL_KAFKA=0 installs without Kafka, the stream job and the producer" >&2
    exit 1
  fi
  [ "$installed" = 0 ] || exit "$installed"
  kubectl -n "$SFMLOPS_NAMESPACE" get ingress
}

down_local() {
  "$helm" uninstall "$SFMLOPS_RELEASE" -n "$SFMLOPS_NAMESPACE" --ignore-not-found --wait
  kubectl -n "$KAFKA_NAMESPACE" delete -f "$local_kafka_manifest" --ignore-not-found --wait >/dev/null 2>&1 || true
  if [ "${1:-}" = --purge ]; then
    kubectl delete namespace "$SFMLOPS_NAMESPACE" "$KAFKA_NAMESPACE" --ignore-not-found
  fi
}

case "${1:-}:$mode" in
  up:all) up ;;
  up:local) up_local ;;
  template:*) template ;;
  down:all) shift; down "$@" ;;
  down:local) shift; down_local "$@" ;;
  *) echo "usage: $0 up | template | down [--purge]" >&2; exit 2 ;;
esac
