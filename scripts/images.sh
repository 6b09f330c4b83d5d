#!/usr/bin/env bash
# The sfmlops images: the one list the Makefile, the deploy workflow, the deploy script and the
# tests read. Each image is pushed as sfmlops-<name> and built from the repository root.
#   scripts/images.sh list            one line per image: name, Dockerfile, build target
#   scripts/images.sh matrix          the list as a JSON array for a GitHub Actions matrix
#   scripts/images.sh build TAG       docker build of every image as sfmlops-<name>:TAG
set -euo pipefail

cd "$(dirname "$0")/.."

# name              Dockerfile                  target (- for the file's last stage)
images() {
  cat <<'LIST'
forecast-api        images/sfmlops/Dockerfile   forecast-api
web-ui              images/sfmlops/Dockerfile   web-ui
training            images/sfmlops/Dockerfile   training
data-producer       images/sfmlops/Dockerfile   data-producer
stream-processor    images/sfmlops/Dockerfile   stream-processor
mlflow              images/sfmlops/Dockerfile   mlflow
airflow             images/airflow/Dockerfile   -
LIST
}

matrix() {
  local name dockerfile target separator=""
  printf '['
  while read -r name dockerfile target; do
    [ "$target" = - ] && target=""
    printf '%s{"name":"%s","dockerfile":"%s","target":"%s"}' "$separator" "$name" "$dockerfile" "$target"
    separator=,
  done < <(images)
  printf ']\n'
}

build() {
  local tag=$1 name dockerfile target
  while read -r name dockerfile target; do
    local target_args=()
    [ "$target" != - ] && target_args=(--target "$target")
    docker build -f "$dockerfile" "${target_args[@]}" -t "sfmlops-$name:$tag" .
  done < <(images)
}

case "${1:-}" in
  list) images | tr -s ' ' '\t' ;;
  matrix) matrix ;;
  build)
    [ $# -eq 2 ] || { echo "usage: $0 build TAG" >&2; exit 2; }
    build "$2"
    ;;
  *) echo "usage: $0 list | matrix | build TAG" >&2; exit 2 ;;
esac
