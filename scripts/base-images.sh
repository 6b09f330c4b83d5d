#!/usr/bin/env bash
# Local stand-ins for the public base images, for machines that reach Debian's packages, PyPI and
# Maven Central but no container registry. Each is a Debian bookworm root filesystem made by
# mmdebstrap and imported with podman (or docker), tagged localhost/sfmlops-base-NAME:KEY where
# KEY hashes everything it is made from, so a changed package list or lock makes a new one and
# an unchanged one is never rebuilt.
#   scripts/base-images.sh NAME...    make the named stand-ins if missing; print each image name
#                                     (python, maven, airflow; postgres, kafka, nginx and prometheus
#                                     are scripts/compose-images.sh's)
#   scripts/base-images.sh wheels     fill the wheel folder of the lock; print its path
#   scripts/base-images.sh airflow-wheels   the same for requirements-airflow.txt
#   scripts/base-images.sh list       the stand-ins, one per line: name, the public image it replaces
#   scripts/base-images.sh prune      remove cached root filesystems and wheels that no current key names
# Caches: $SFMLOPS_IMAGE_CACHE (default ~/.cache/sfmlops-images): rootfs/ (root filesystem
# archives) and wheels/ (one folder per lock hash). Users whose Docker reaches Docker Hub need none
# of this: the Dockerfiles' defaults are the official images.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SFMLOPS_IMAGE_CACHE:-$HOME/.cache/sfmlops-images}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/images/podman/containers.conf}
SUITE=bookworm
# Python of the wheels: bookworm's python3 (the public images' base is python:3.11).
PYTHON_VERSION=3.11
# Bookworm has glibc 2.36: every manylinux wheel up to that runs on it. pip needs each tag
# spelled out (it does not widen an older alias such as manylinux2014 from a newer one).
wheel_platforms() {
  local minor arch=${1:-x86_64}
  for minor in $(seq 36 -1 17) 12 5; do printf -- '--platform manylinux_2_%s_%s ' "$minor" "$arch"; done
  printf -- '--platform manylinux2014_%s --platform manylinux2010_%s --platform manylinux1_%s' \
    "$arch" "$arch" "$arch"
}
# Packages PyPI serves only as source: built into a (pure Python) wheel on this machine.
SOURCE_ONLY_PACKAGES=(pyspark)

engine() {
  if command -v podman >/dev/null 2>&1; then echo podman; else echo docker; fi
}

# name | public image it stands in for | Debian packages
bases() {
  cat <<'LIST'
python      python:3.11.14-slim-bookworm    python3,python3-venv,python-is-python3,ca-certificates,passwd
maven       maven:3.9.9-eclipse-temurin-17  maven,openjdk-17-jdk-headless,ca-certificates-java
LIST
}

key_of() { sha256sum | cut -c1-12; }

packages_of() { bases | awk -v name="$1" '$1 == name { print $3 }'; }

# Root filesystem archive of a package list, made once per key.
rootfs() {
  local name=$1 packages=$2 key=$3
  local archive="$cache/rootfs/$name-$key.tar"
  if [ ! -f "$archive" ]; then
    command -v mmdebstrap >/dev/null 2>&1 || {
      echo "mmdebstrap not found: run scripts/install-container-tools.sh" >&2
      exit 1
    }
    mkdir -p "$cache/rootfs"
    echo "Making the $name root filesystem ($SUITE: $packages) ..." >&2
    # Documentation, manuals and translations left out, as the slim public images do (the Java
    # packages still link their manual pages with update-alternatives: its folder must exist).
    # shellcheck disable=SC2016  # the hooks' $1 is mmdebstrap's, not this script's
    mmdebstrap --quiet --variant=minbase --format=tar --include="$packages" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --essential-hook='mkdir -p "$1/usr/share/man/man1"' --aptopt='Acquire::Retries "3"' \
      "$SUITE" "$archive.partial" >&2
    mv "$archive.partial" "$archive"
  fi
  echo "$archive"
}

base_key() { { echo "$SUITE $(packages_of "$1")"; declare -f rootfs; } | key_of; }

# A stand-in made from its root filesystem alone (python, maven).
debian_base() {
  local name=$1 packages key image archive
  packages=$(packages_of "$name")
  key=$(base_key "$name")
  image="localhost/sfmlops-base-$name:$key"
  if ! "$(engine)" image exists "$image" 2>/dev/null; then
    archive=$(rootfs "$name" "$packages" "$key")
    "$(engine)" import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
      "$archive" "$image" >/dev/null
  fi
  echo "$image"
}

wheels_key() { { cat "$1" "$2"; declare -f fill_wheels wheel_platforms; } | key_of; }

# Download every wheel a lock needs for bookworm's Python into a folder named by the hash of the
# lock and the requirements (pip inside a fresh root filesystem does not trust this machine's CA:
# the build installs from this folder offline). Args: folder prefix, lock, requirements file.
fill_wheels() {
  local prefix=$1 lock=$2 requirements=$3
  local key dir
  key=$(wheels_key "$lock" "$requirements")
  dir="$cache/wheels/$prefix-$key"
  if [ ! -f "$dir/.complete" ]; then
    local pip=${PIP:-$root/.venv/bin/pip}
    [ -x "$pip" ] || pip="python3 -m pip"
    # An interrupted download resumes; the folders of earlier locks serve the wheels they share.
    mkdir -p "$dir.partial"
    local earlier links=()
    for earlier in "$cache/wheels/$prefix"-*/; do
      [ -f "$earlier/.complete" ] && links+=(--find-links "$earlier")
    done
    echo "Downloading the wheels of $(basename "$lock") into $dir ..." >&2
    local package pin
    for package in "${SOURCE_ONLY_PACKAGES[@]}"; do
      pin=$(grep -E "^$package==" "$lock" | cut -d' ' -f1 || true)
      [ -n "$pin" ] || continue
      compgen -G "$dir.partial/${package}-${pin#*==}-*.whl" >/dev/null && continue
      earlier=$(compgen -G "$cache/wheels/$prefix-*/${package}-${pin#*==}-*.whl" | head -n 1 || true)
      if [ -n "$earlier" ]; then
        ln "$earlier" "$dir.partial/" 2>/dev/null || cp "$earlier" "$dir.partial/"
        continue
      fi
      # shellcheck disable=SC2086  # $pip may be "python3 -m pip"
      $pip wheel --quiet --no-deps --no-binary "$package" -w "$dir.partial" "$pin" >&2
    done
    # shellcheck disable=SC2046,SC2086  # the platform flags are words; $pip may be two words
    $pip download --quiet --disable-pip-version-check --only-binary=:all: \
      --python-version "$PYTHON_VERSION" $(wheel_platforms) \
      --find-links "$dir.partial" "${links[@]}" -c "$lock" -d "$dir.partial" -r "$requirements" >&2
    touch "$dir.partial/.complete"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
  fi
  echo "$dir"
}

# The requirements of every sfmlops venv the images build: the package's build backend, its
# dependencies (all extras but dev) and the MLflow server's.
sfmlops_requirements() {
  "${PYTHON:-python3}" - "$root/pyproject.toml" <<'EOF'
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    pyproject = tomllib.load(file)
project = pyproject["project"]
requirements = pyproject["build-system"]["requires"] + project["dependencies"]
for extra, packages in project.get("optional-dependencies", {}).items():
    if extra != "dev":
        requirements += [p for p in packages if not p.startswith("sfmlops[")]
print("\n".join(requirements))
EOF
  grep -v '^#' "$root/images/sfmlops/mlflow-requirements.txt"
}

sfmlops_wheels() {
  local requirements
  requirements=$(mktemp)
  sfmlops_requirements >"$requirements"
  fill_wheels sfmlops "$root/constraints.txt" "$requirements"
  rm -f "$requirements"
}

airflow_wheels() {
  fill_wheels airflow "$root/requirements-airflow.txt" "$root/requirements-airflow.txt"
}

# The Airflow stand-in: the Python one plus requirements-airflow.txt, installed as the official
# image installs it (user airflow, UID 50000, group 0, AIRFLOW_HOME=/opt/airflow).
airflow_base() {
  local python wheels key image
  python=$(debian_base python)
  wheels=$(airflow_wheels)
  key=$({ echo "$python"; cat "$root/requirements-airflow.txt" "$root/images/bases/airflow/Dockerfile" \
    "$root/images/bases/airflow/entrypoint.sh"; } | key_of)
  image="localhost/sfmlops-base-airflow:$key"
  if ! "$(engine)" image exists "$image" 2>/dev/null; then
    echo "Building the Airflow base ..." >&2
    local context
    context=$(mktemp -d)
    cp "$root/requirements-airflow.txt" "$root/images/bases/airflow/entrypoint.sh" "$context/"
    "$(engine)" build --quiet --pull=never --format docker -f "$root/images/bases/airflow/Dockerfile" \
      --build-arg PYTHON_IMAGE="$python" -v "$wheels:/wheels:ro" \
      -v "$(offline_pip_conf):/etc/pip.conf:ro" -t "$image" "$context" >/dev/null
    rm -rf "$context"
  fi
  echo "$image"
}

# pip's configuration for a build that installs from the wheel folder mounted at /wheels:
# written once into the cache, its path printed.
offline_pip_conf() {
  local file="$cache/pip-offline.conf"
  mkdir -p "$cache"
  printf '[global]\nno-index = true\nfind-links = /wheels\n' >"$file.$$"
  mv "$file.$$" "$file"
  echo "$file"
}

# Everything in the cache that the current keys do not name: root filesystems of older package
# lists, wheel folders of older locks, interrupted downloads.
prune() {
  local current=() requirements file
  for name in $(bases | awk '{ print $1 }'); do
    current+=("$cache/rootfs/$name-$(base_key "$name").tar")
  done
  requirements=$(mktemp)
  sfmlops_requirements >"$requirements"
  current+=("$cache/wheels/sfmlops-$(wheels_key "$root/constraints.txt" "$requirements")")
  current+=("$cache/wheels/airflow-$(wheels_key "$root/requirements-airflow.txt" "$root/requirements-airflow.txt")")
  rm -f "$requirements"
  for file in "$cache"/rootfs/* "$cache"/wheels/*; do
    [ -e "$file" ] || continue
    printf '%s\n' "${current[@]}" | grep -qxF "$file" && continue
    echo "removing $file" >&2
    rm -rf "$file"
  done
}

[ $# -ge 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
for name in "$@"; do
  case "$name" in
    python | maven) debian_base "$name" ;;
    airflow) airflow_base ;;
    # The third-party images of compose.yaml (and the local cluster's PostgreSQL and Kafka).
    postgres | kafka | nginx | prometheus) "$root/scripts/compose-images.sh" "$name" ;;
    wheels) sfmlops_wheels ;;
    airflow-wheels) airflow_wheels ;;
    pip-conf) offline_pip_conf ;;
    list) bases | awk '{ print $1 "\t" $2 }'; printf 'airflow\tapache/airflow:3.3.2-python3.11\n' ;;
    prune) prune ;;
    *) echo "unknown base image: $name" >&2; exit 2 ;;
  esac
done
