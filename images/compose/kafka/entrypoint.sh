#!/bin/bash
# The official apache/kafka image's contract: KAFKA_FOO_BAR=value is foo.bar=value in the
# broker's properties (KAFKA_HEAP_OPTS and KAFKA_OPTS are the JVM's), CLUSTER_ID names the
# cluster formatted on first start.
set -euo pipefail
properties=/tmp/server.properties
: >"$properties"
while IFS='=' read -r name value; do
  case "$name" in KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_VERSION) continue ;; esac
  key=${name#KAFKA_}
  key=${key,,}
  echo "${key//_/.}=$value" >>"$properties"
done < <(env | grep '^KAFKA_' || true)
read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xmx512m}"
read -r -a options <<<"${KAFKA_OPTS:-}"
java=(java "${heap[@]}" "${options[@]}" -Djava.awt.headless=true
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*')
log_dirs=$(sed -n 's/^log\.dirs=//p' "$properties")
if [ ! -f "${log_dirs%%,*}/meta.properties" ]; then
  "${java[@]}" kafka.tools.StorageTool format --ignore-formatted \
    -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$properties"
fi
exec "${java[@]}" kafka.Kafka "$properties"
