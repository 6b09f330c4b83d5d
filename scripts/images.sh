#!/usr/bin/env bash
# The sfmlops images: the one list the Makefile, the deploy workflow, the deploy script and the
# tests read. Each image is pushed as sfmlops-<name> and built from the repository root.
#   scripts/images.sh list            one line per image: name, Dockerfile, build target
#   scripts/images.sh matrix          the list as a JSON array for a GitHub Actions matrix
#   scripts/images.sh build [TAG]     build every image whose inputs changed, as
#                                     sfmlops-<name>:<content hash> (and :TAG when given)
#   scripts/images.sh tag NAME        the content-hash tag image NAME has when built now
#   scripts/images.sh engine          the container engine the build uses (docker or podman)
# Engine: docker when its daemon answers, else podman (SFMLOPS_CONTAINER_ENGINE overrides).
# Bases (SFMLOPS_BASE_IMAGES): "public" builds on the official images the Dockerfiles name;
# "local" (the default with podman) on the stand-ins of scripts/base-images.sh, made from Debian
# packages, with Python packages installed offline from a wheel folder of the lock, for machines
# that reach no container registry. The content hash covers the Dockerfile, every file it
# copies from the repository, the target and the bases, so an image whose inputs did not change
# is not built again.
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")/.."
root=$(pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/images/podman/containers.conf}
# shellcheck source=scripts/image-build-lock.sh
source "$root/scripts/image-build-lock.sh"

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

engine() {
  if [ -n "${SFMLOPS_CONTAINER_ENGINE:-}" ]; then
    echo "$SFMLOPS_CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    echo "neither a Docker daemon nor podman found (scripts/install-container-tools.sh installs podman)" >&2
    exit 1
  fi
}

base_mode() {
  local mode=${SFMLOPS_BASE_IMAGES:-}
  if [ -z "$mode" ]; then
    if [ "$ENGINE" = podman ]; then mode=local; else mode=public; fi
  fi
  case "$mode" in local | public) echo "$mode" ;; *)
    echo "SFMLOPS_BASE_IMAGES must be local or public, not $mode" >&2
    exit 2
    ;;
  esac
}

# The repository paths a Dockerfile copies (COPY without --from), one per line.
copied_paths() {
  sed -e ':join' -e '/\\$/{N;s/\\\n//;b join' -e '}' "$1" |
    awk 'toupper($1) == "COPY" && $0 !~ /--from=/ {
      n = 0
      for (i = 2; i <= NF; i++) if ($i !~ /^--/) words[++n] = $i
      for (i = 1; i < n; i++) print words[i]
    }'
}

# Hash of everything an image is made of: its Dockerfile, the files that Dockerfile copies
# (caches and bytecode left out, as .dockerignore does), its target and the build arguments of
# BUILD_FLAGS (they name the bases).
content_hash() {
  local dockerfile=$1 target=$2
  {
    echo "$target"
    build_args "${BUILD_FLAGS[@]}"
    # shellcheck disable=SC2046  # one path per word
    find "$dockerfile" $(copied_paths "$dockerfile") -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-12
}

# The build flags of one Dockerfile (BUILD_FLAGS): with local bases, the stand-ins as build
# arguments and the build-time mounts that let pip and Maven work without this machine's CA.
prepare() {
  local dockerfile=$1
  BUILD_FLAGS=()
  # Docker's image format: the OCI format has no HEALTHCHECK, and podman would drop it.
  [ "$ENGINE" = podman ] && BUILD_FLAGS+=(--format docker)
  [ "$MODE" = local ] || return 0
  [ "$ENGINE" = podman ] || {
    echo "local base images need podman (its build-time mounts); set SFMLOPS_BASE_IMAGES=public" >&2
    exit 2
  }
  case "$dockerfile" in
    images/airflow/*)
      BUILD_FLAGS+=(--build-arg "AIRFLOW_IMAGE=$(scripts/base-images.sh airflow)")
      ;;
    *)
      BUILD_FLAGS+=(
        --build-arg "PYTHON_IMAGE=$(scripts/base-images.sh python)"
        --build-arg "MAVEN_IMAGE=$(scripts/base-images.sh maven)"
        # pip installs from the wheel folder of the lock, offline (mounted for the build only).
        -v "$(scripts/base-images.sh wheels):/wheels:ro"
        -v "$(scripts/base-images.sh pip-conf):/etc/pip.conf:ro"
      )
      # Maven in the jar stage reaches Maven Central through this machine's CA: the build borrows
      # the host's Java trust store, mounted beside the image's own (which the JRE's package
      # rewrites when installed) and named by MAVEN_OPTS of that stage only.
      if [ -f /etc/ssl/certs/java/cacerts ]; then
        BUILD_FLAGS+=(
          -v /etc/ssl/certs/java/cacerts:/run/host-java-cacerts:ro
          --build-arg "MAVEN_OPTS=-Djavax.net.ssl.trustStore=/run/host-java-cacerts"
        )
      fi
      ;;
  esac
  BUILD_FLAGS+=(--pull=never)
}

# The build arguments among build flags (their values name the bases), for the content hash.
build_args() {
  local flag previous=""
  for flag in "$@"; do
    [ "$previous" = --build-arg ] && echo "$flag"
    previous=$flag
  done
}

# Images whose inputs did not change keep their tag and are not built again. The flags are
# worked out once per Dockerfile (the list keeps each Dockerfile's images together).
build() {
  local extra_tag=${1:-} name dockerfile target started total_started prepared=""
  total_started=$(date +%s)
  while read -r name dockerfile target; do
    if [ "$dockerfile" != "$prepared" ]; then
      prepare "$dockerfile"
      prepared=$dockerfile
    fi
    local hash image target_args=()
    hash=$(content_hash "$dockerfile" "$target")
    image="sfmlops-$name:$hash"
    [ "$target" != - ] && target_args=(--target "$target")
    started=$(date +%s)
    if "$ENGINE" image inspect "$image" >/dev/null 2>&1; then
      echo "$image: inputs unchanged, not rebuilt" >&2
    else
      echo "Building $image ..." >&2
      "$ENGINE" build --quiet -f "$dockerfile" "${target_args[@]}" "${BUILD_FLAGS[@]}" \
        -t "$image" . >/dev/null
    fi
    [ -z "$extra_tag" ] || "$ENGINE" tag "$image" "sfmlops-$name:$extra_tag"
    printf '%-17s %-32s %5s s %6s MiB\n' "$name" "$image" "$(($(date +%s) - started))" \
      "$(("$("$ENGINE" image inspect --format '{{.Size}}' "$image")" / 1048576))"
  done < <(images)
  echo "images built in $(($(date +%s) - total_started)) s ($ENGINE, $MODE bases)" >&2
}

# The content-hash tag of one image, as `build` would make it now (making the bases if missing).
tag_of() {
  local wanted=$1 name dockerfile target
  while read -r name dockerfile target; do
    [ "$name" = "$wanted" ] || continue
    prepare "$dockerfile"
    content_hash "$dockerfile" "$target"
    return 0
  done < <(images)
  echo "no image named $wanted" >&2
  exit 2
}

case "${1:-}" in
  list) images | tr -s ' ' '\t' ;;
  matrix) matrix ;;
  engine) engine ;;
  build | tag)
    hold_image_build_lock
    ENGINE=$(engine)
    MODE=$(base_mode)
    if [ "$1" = build ]; then
      [ $# -le 2 ] || { echo "usage: $0 build [TAG]" >&2; exit 2; }
      build "${2:-}"
    else
      [ $# -eq 2 ] || { echo "usage: $0 tag NAME" >&2; exit 2; }
      tag_of "$2"
    fi
    ;;
  *) echo "usage: $0 list | matrix | build [TAG] | tag NAME | engine" >&2; exit 2 ;;
esac
