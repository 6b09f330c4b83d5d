#!/usr/bin/env bash
# Local stand-ins for the third-party images of compose.yaml, for machines that reach Debian's
# packages and Maven Central but no container registry (images/compose/NAME/Containerfile).
# Each is built with podman on the Debian bookworm base of scripts/base-images.sh and tagged
# localhost/sfmlops-compose-NAME:KEY, KEY hashing its files and base, so an unchanged one is never
# rebuilt.
#   scripts/compose-images.sh NAME...   build the named stand-ins if missing; print each image name
# NAME: postgres, kafka, nginx, prometheus. BASE_IMAGE overrides the base (default:
# `scripts/base-images.sh python`).
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/images/podman/containers.conf}
# shellcheck source=scripts/image-build-lock.sh
source "$root/scripts/image-build-lock.sh"

base_image() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; else "$root/scripts/base-images.sh" python; fi
}

# The build context of a stand-in: its folder, plus for Kafka the broker jars of deps/pom.xml.
context_of() {
  local name=$1 context
  context=$(mktemp -d)
  cp -r "$root/images/compose/$name/." "$context/"
  if [ "$name" = kafka ]; then
    local jars=${SFMLOPS_JARS_DIR:-$HOME/.cache/sfmlops/jars}
    SFMLOPS_JARS_DIR=$jars "$root/scripts/fetch-jars.sh" kafka-broker >&2
    cp -r "$jars/kafka-broker" "$context/jars"
    cp "$root/deps/kafka-log4j2.properties" "$context/"
  fi
  echo "$context"
}

build() {
  local name=$1 base key image context
  [ -f "$root/images/compose/$name/Containerfile" ] || {
    echo "no stand-in named $name (images/compose/*)" >&2
    exit 2
  }
  base=$(base_image)
  key=$({
    echo "$base"
    find "$root/images/compose/$name" -type f -print0 | sort -z | xargs -0 sha256sum | cut -c1-64
    [ "$name" != kafka ] || cat "$root/deps/pom.xml" "$root/deps/kafka-log4j2.properties"
  } | sha256sum | cut -c1-12)
  image="localhost/sfmlops-compose-$name:$key"
  if ! podman image exists "$image"; then
    echo "Building $image ..." >&2
    context=$(context_of "$name")
    podman build --quiet --pull=never --build-arg "BASE_IMAGE=$base" -f "$context/Containerfile" \
      -t "$image" "$context" >/dev/null
    rm -rf "$context"
  fi
  echo "$image"
}

[ $# -ge 1 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
hold_image_build_lock
for name in "$@"; do build "$name"; done
