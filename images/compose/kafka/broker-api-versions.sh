#!/bin/bash
# Health check of the stand-in: succeeds when the broker's listener accepts a connection
# (the official script's use in compose.yaml: --bootstrap-server HOST:PORT).
set -euo pipefail
server=localhost:9092
while [ $# -gt 0 ]; do
  [ "$1" = --bootstrap-server ] && server=$2
  shift
done
exec 3<>"/dev/tcp/${server%:*}/${server##*:}"
