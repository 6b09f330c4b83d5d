# shellcheck shell=bash
# Sourced by scripts/images.sh and scripts/compose-images.sh: one podman build at a time on a
# machine (a background build of `make test` and a tier needing the images), the second waits
# and then finds its images built. A nested call already holds the lock and does not wait on
# itself.
hold_image_build_lock() {
  [ -z "${SFMLOPS_IMAGES_LOCKED:-}" ] || return 0
  local dir=${SFMLOPS_IMAGE_CACHE:-$HOME/.cache/sfmlops-images}
  mkdir -p "$dir"
  exec {image_build_lock}>"$dir/build.lock"
  flock "$image_build_lock"
  export SFMLOPS_IMAGES_LOCKED=1
}
