#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft: broker and controller in one process) for
# development, tests and the demo, from the Maven Central jars of deps/pom.xml.
#   scripts/kafka.sh start [PORT [CONTROLLER_PORT]]  format storage once, start, wait until ready
#   scripts/kafka.sh stop                             stop it (data is kept for the next start)
#   scripts/kafka.sh status                           exit 0 and print the address when running
# Data, configuration and logs live in $SFMLOPS_HOME/kafka (SFMLOPS_HOME: .sfmlops).
# PORT defaults to $SFMLOPS_KAFKA_PORT or 9092, CONTROLLER_PORT to PORT + 1; the broker listens
# on 127.0.0.1 only. SFMLOPS_KAFKA_HEAP sets the JVM heap (default 512m).
# `start` gives up when the broker's log has not grown for SFMLOPS_KAFKA_READY_TIMEOUT seconds
# (default 90: stuck) or it is not ready after SFMLOPS_KAFKA_START_LIMIT seconds (default 300).
# With SFMLOPS_KAFKA_ADMIN_PASSWORD set at the first start, clients authenticate with
# SASL/SCRAM-SHA-512 (listener SASL_PLAINTEXT) and ACLs decide what each user may do
# (StandardAuthorizer): the super user "admin" has that password, and SFMLOPS_KAFKA_SCRAM_USERS
# ("name=password name=password") adds client users, which have no ACL until one is created.
# The controller listener stays PLAINTEXT on loopback (KRaft cannot use SCRAM there).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
home=${SFMLOPS_HOME:-.sfmlops}
dir=$(mkdir -p "$home/kafka" && cd "$home/kafka" && pwd)
pidfile=$dir/broker.pid
jars=${SFMLOPS_JARS_DIR:-$HOME/.cache/sfmlops/jars}/kafka-broker
ready_timeout=${SFMLOPS_KAFKA_READY_TIMEOUT:-90}
start_limit=${SFMLOPS_KAFKA_START_LIMIT:-300}

usage() { echo "usage: $0 start [PORT [CONTROLLER_PORT]] | stop | status" >&2; exit 2; }

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

java_command=(
  java -Xms128m -Xmx"${SFMLOPS_KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$root/deps/kafka-log4j2.properties" -Dkafka.logs.dir="$dir"
  -cp "$jars/*"
)

# One node that is both broker and KRaft controller. Authentication changes only the client
# listener's protocol and adds the SCRAM and ACL properties; the rest is the same either way.
write_config() {
  local port=$1 controller_port=$2 listener=PLAINTEXT
  [ -z "${SFMLOPS_KAFKA_ADMIN_PASSWORD:-}" ] || listener=SASL_PLAINTEXT
  # With SASL the admin password is in the file: it is only readable by its owner before the
  # password is written (a rewrite keeps the mode).
  : >"$dir/server.properties"
  if [ "$listener" = SASL_PLAINTEXT ]; then
    chmod 600 "$dir/server.properties"
  else
    chmod 644 "$dir/server.properties"
  fi
  {
    cat <<EOF
# Written by scripts/kafka.sh: one node that is both broker and KRaft controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$listener://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$listener://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=$listener
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$listener:$listener
log.dirs=$dir/data
num.partitions=2
# One node: internal topics cannot have more replicas than that.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
EOF
    if [ "$listener" = SASL_PLAINTEXT ]; then
      cat <<EOF
# Clients authenticate with SCRAM-SHA-512 and ACLs authorize them.
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$SFMLOPS_KAFKA_ADMIN_PASSWORD";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# The node talks to its own controller over the PLAINTEXT loopback listener as ANONYMOUS.
super.users=User:admin;User:ANONYMOUS
EOF
    fi
  } >"$dir/server.properties"
}

# The --add-scram arguments of the storage format: admin and SFMLOPS_KAFKA_SCRAM_USERS.
scram_arguments() {
  [ -n "${SFMLOPS_KAFKA_ADMIN_PASSWORD:-}" ] || return 0
  local user
  for user in "admin=$SFMLOPS_KAFKA_ADMIN_PASSWORD" ${SFMLOPS_KAFKA_SCRAM_USERS:-}; do
    printf '%s\n' --add-scram "SCRAM-SHA-512=[name=${user%%=*},password=${user#*=}]"
  done
}

start() {
  local port=${1:-${SFMLOPS_KAFKA_PORT:-9092}}
  local controller_port=${2:-$((port + 1))}
  if pid=$(running_pid); then
    echo "Kafka already running (pid $pid): $(cat "$dir/address")"
    return 0
  fi
  command -v java >/dev/null 2>&1 || {
    echo "java not found: run scripts/install-system-deps.sh" >&2
    exit 1
  }
  SFMLOPS_JARS_DIR=$(dirname "$jars") "$root/scripts/fetch-jars.sh" kafka-broker
  write_config "$port" "$controller_port"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$("${java_command[@]}" kafka.tools.StorageTool random-uuid)
    local scram=()
    mapfile -t scram < <(scram_arguments)
    "${java_command[@]}" kafka.tools.StorageTool format --ignore-formatted \
      -t "$cluster_id" -c "$dir/server.properties" "${scram[@]}" >"$dir/format.log" 2>&1 || {
      cat "$dir/format.log" >&2
      exit 1
    }
    # The log lists the SCRAM credentials' salted keys: keep it only when formatting failed.
    rm -f "$dir/format.log"
  fi
  : >"$dir/server.log"
  nohup "${java_command[@]}" kafka.Kafka "$dir/server.properties" >>"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "127.0.0.1:$port" >"$dir/address"
  # Ready means the broker finished starting up (it logs this line only once it serves
  # requests) and its port accepts connections. A start-up logs its steps as it goes; on a
  # loaded machine (several JVMs starting on two cores) it can take minutes, so a fixed bound
  # either fails slow starts or waits long for stuck ones. The wait instead gives up when the
  # log has not grown for ready_timeout seconds (stuck), and after start_limit seconds in all
  # (a broker that keeps logging but never gets ready, e.g. one retrying its controller).
  local started=$SECONDS progressed=$SECONDS logged=0 size
  until grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null &&
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! running_pid >/dev/null; then
      echo "Kafka exited during start-up; last lines of $dir/server.log:" >&2
      tail -n 30 "$dir/server.log" >&2
      exit 1
    fi
    size=$(wc -c <"$dir/server.log")
    if [ "$size" -ne "$logged" ]; then
      logged=$size
      progressed=$SECONDS
    fi
    if [ $((SECONDS - progressed)) -ge "$ready_timeout" ]; then
      not_ready "Kafka made no progress for ${ready_timeout}s (its log stopped growing)"
    fi
    if [ $((SECONDS - started)) -ge "$start_limit" ]; then
      not_ready "Kafka not ready after ${start_limit}s"
    fi
    sleep 0.5
  done
  echo "Kafka running on 127.0.0.1:$port (data in $dir/data)"
}

# Report a start-up that did not get ready, with the end of its log, stop it and fail.
not_ready() {
  echo "$1; last lines of $dir/server.log:" >&2
  tail -n 30 "$dir/server.log" >&2
  stop >&2
  exit 1
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    echo "Kafka not running"
    return 0
  fi
  kill -TERM "$pid"
  # A controlled shutdown flushes logs and takes a few seconds; only then force it.
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "Kafka did not stop within 30s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "Kafka stopped"
}

status() {
  local pid
  if pid=$(running_pid); then
    echo "Kafka running (pid $pid) on $(cat "$dir/address")"
  else
    echo "Kafka not running"
    return 1
  fi
}

[ $# -ge 1 ] || usage
case "$1" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
