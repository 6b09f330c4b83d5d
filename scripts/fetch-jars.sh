#!/usr/bin/env bash
# Resolves a profile of deps/pom.xml with Maven and copies its runtime jars into a folder.
#   scripts/fetch-jars.sh kafka-broker|spark-connectors [DEST]
# DEST defaults to $SFMLOPS_JARS_DIR/PROFILE (SFMLOPS_JARS_DIR: ~/.cache/sfmlops/jars), the
# folder `sfmlops stream` and scripts/kafka.sh read. Maven caches downloads in ~/.m2; a folder
# already filled from the same pom is left as it is, so repeated calls cost nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
pom=$root/deps/pom.xml
usage() { echo "usage: $0 kafka-broker|spark-connectors [DEST]" >&2; exit 2; }

[ $# -ge 1 ] || usage
profile=$1
case "$profile" in kafka-broker | spark-connectors) ;; *) usage ;; esac
dest=${2:-${SFMLOPS_JARS_DIR:-$HOME/.cache/sfmlops/jars}/$profile}

command -v mvn >/dev/null 2>&1 || {
  echo "Maven (mvn) not found: run scripts/install-system-deps.sh" >&2
  exit 1
}

stamp=$dest/.pom.sha256
wanted=$(sha256sum "$pom" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

# One resolution at a time (parallel test workers each start a broker): a second caller
# waits, then finds the folder filled and leaves it alone, so no running broker has its
# jars swapped under it.
mkdir -p "$(dirname "$dest")"
exec 9>"$dest.lock"
flock 9
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

# Copy into a fresh sibling folder and swap it in, so a failed or interrupted run never
# leaves a half-filled folder that looks complete.
staging=$(mktemp -d "$dest.XXXXXX")
trap 'rm -rf "$staging"' EXIT
echo "Resolving $profile jars with Maven (cached in ~/.m2) ..." >&2
mvn -B -q -f "$pom" -P "$profile" \
  dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$staging" >&2
echo "$wanted" >"$staging/.pom.sha256"
chmod 755 "$staging"
rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
echo "$profile jars in $dest" >&2
