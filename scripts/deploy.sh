#!/usr/bin/env bash
# The sfmlops deployment sequence, the same on a local cluster and on GKE (docs/deployment.md
# lists the commands it runs). Chart versions come from helm-releases.env.
#   scripts/deploy.sh up        namespaces, KubeRay operator, ingress-nginx, kube-prometheus-stack,
#                               Kafka, sfmlops-helm, Airflow
#   scripts/deploy.sh template  render every release against its real upstream chart into
#                               $SFMLOPS_RENDER_DIR (default ./rendered); needs the charts' hosts
#   scripts/deploy.sh down      uninstall the releases in reverse order (kept Secrets and volumes
#                               stay; add --purge to delete the namespaces too)
# Environment:
#   SFMLOPS_IMAGE_REGISTRY  registry prefix of the sfmlops images (default: none, images loaded
#                           into the local cluster)
#   SFMLOPS_IMAGE_TAG       tag of the sfmlops images (default: the current commit)
#   SFMLOPS_VALUES          extra values files for sfmlops-helm, space-separated (e.g. values-gke.yaml)
#   SFMLOPS_SET             extra key=value settings for sfmlops-helm, whitespace-separated
#   HELM                    the helm binary (default: helm on PATH; ./install-helm.sh installs it)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=helm-releases.env
source helm-releases.env

helm=${HELM:-helm}
registry=${SFMLOPS_IMAGE_REGISTRY:-}
tag=${SFMLOPS_IMAGE_TAG:-$(git rev-parse --short=12 HEAD)}
read -r -a extra_values <<<"${SFMLOPS_VALUES:-}"
read -r -a extra_settings <<<"$(echo "${SFMLOPS_SET:-}" | tr '\n' ' ')"

sfmlops_values=(-f sfmlops-helm/values.yaml -f values-ray.yaml)
for file in "${extra_values[@]}"; do sfmlops_values+=(-f "$file"); done
for setting in "${extra_settings[@]}"; do sfmlops_values+=(--set "$setting"); done
sfmlops_values+=(--set "global.imageTag=$tag")
[ -n "$registry" ] && sfmlops_values+=(--set "global.imageRegistry=$registry")

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
release_kuberay=(kuberay-operator kuberay/"$KUBERAY_OPERATOR_CHART" --version "$KUBERAY_OPERATOR_VERSION" -n "$KUBERAY_OPERATOR_NAMESPACE")
release_ingress=(ingress-nginx ingress-nginx/"$INGRESS_NGINX_CHART" --version "$INGRESS_NGINX_VERSION" -n "$INGRESS_NGINX_NAMESPACE")
release_monitoring=("$KUBE_PROMETHEUS_RELEASE" prometheus-community/"$KUBE_PROMETHEUS_CHART" --version "$KUBE_PROMETHEUS_VERSION" -n "$KUBE_PROMETHEUS_NAMESPACE" -f values-kube-prometheus.yaml)
release_kafka=("$KAFKA_RELEASE" "$KAFKA_REPO/$KAFKA_CHART" --version "$KAFKA_VERSION" -n "$KAFKA_NAMESPACE" -f values-kafka.yaml)
release_sfmlops=("$SFMLOPS_RELEASE" ./sfmlops-helm -n "$SFMLOPS_NAMESPACE" "${sfmlops_values[@]}")
release_airflow=("$AIRFLOW_RELEASE" apache-airflow/"$AIRFLOW_CHART" --version "$AIRFLOW_VERSION" -n "$AIRFLOW_NAMESPACE" "${airflow_values[@]}")

namespaces() {
  local namespace
  for namespace in "$SFMLOPS_NAMESPACE" "$KAFKA_NAMESPACE" "$AIRFLOW_NAMESPACE" \
    "$KUBE_PROMETHEUS_NAMESPACE" "$INGRESS_NGINX_NAMESPACE" "$KUBERAY_OPERATOR_NAMESPACE"; do
    kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  done
}

# Grafana's admin password: made once, kept in a Secret, never a chart default.
grafana_admin() {
  kubectl -n "$KUBE_PROMETHEUS_NAMESPACE" get secret sfmlops-grafana-admin >/dev/null 2>&1 && return 0
  kubectl -n "$KUBE_PROMETHEUS_NAMESPACE" create secret generic sfmlops-grafana-admin \
    --from-literal=admin-user=admin \
    --from-literal=admin-password="$(openssl rand -hex 16)" >/dev/null
}

up() {
  repos
  namespaces
  "$helm" upgrade --install "${release_kuberay[@]}" --wait --timeout 10m
  "$helm" upgrade --install "${release_ingress[@]}" --wait --timeout 10m
  grafana_admin
  # Before sfmlops-helm: its ServiceMonitor and PodMonitor need the Prometheus Operator's CRDs.
  "$helm" upgrade --install "${release_monitoring[@]}" --wait --timeout 15m
  "$helm" upgrade --install "${release_kafka[@]}" --wait --timeout 10m
  # --wait: every Deployment and StatefulSet ready. The API is ready without a model (its
  # readiness is /health; /ready waits for the first champion, see docs/deployment.md).
  "$helm" upgrade --install "${release_sfmlops[@]}" --wait --timeout 15m
  # After sfmlops-helm: it writes Airflow's metadata connection and keys into the namespace.
  "$helm" upgrade --install "${release_airflow[@]}" --timeout 15m
  kubectl -n "$SFMLOPS_NAMESPACE" get ingress
}

template() {
  local out=${SFMLOPS_RENDER_DIR:-rendered}
  mkdir -p "$out"
  repos
  "$helm" template "${release_kuberay[@]}" >"$out/kuberay-operator.yaml"
  "$helm" template "${release_ingress[@]}" >"$out/ingress-nginx.yaml"
  "$helm" template "${release_monitoring[@]}" >"$out/kube-prometheus-stack.yaml"
  "$helm" template "${release_kafka[@]}" >"$out/kafka.yaml"
  "$helm" template "${release_sfmlops[@]}" >"$out/sfmlops.yaml"
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

case "${1:-}" in
  up) up ;;
  template) template ;;
  down) shift; down "$@" ;;
  *) echo "usage: $0 up | template | down [--purge]" >&2; exit 2 ;;
esac
