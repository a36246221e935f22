#!/usr/bin/env bash
# Start real test servers on loopback and wait until they are ready.
#   services/up.sh [kafka] [elasticsearch] [opensearch]     (default: all three)
#   services/up.sh --keep-data NAME...                       (again, on the data `down.sh --keep-data` left)
# Fetches them first (services/fetch.sh). Leaves already-running ones alone. Writes
# .cache/run/<name>.pid, <name>.port and .cache/run/services.env. Stop with services/down.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_services "$@"
"$SERVICES_DIR/fetch.sh" "${WANT[@]}"
mkdir -p "$RUN"

PY="$REPO_ROOT/.venv/bin/python"
KAFKA_PY=0   # can we probe Kafka with kafka-python?
[ -x "$PY" ] && "$PY" -c 'import kafka' 2>/dev/null && KAFKA_PY=1

port_of() {
  case $1 in kafka) echo "$KAFKA_PORT";; elasticsearch) echo "$ES_PORT";; opensearch) echo "$OS_PORT";; esac
}

# ready NAME PORT: a single readiness probe
ready() {
  port_open "$2" || return 1
  case $1 in
    kafka)  # the port is open and a metadata request is answered
      [ "$KAFKA_PY" = 1 ] || return 0
      "$PY" -c 'import sys; from kafka import KafkaAdminClient as A
a = A(bootstrap_servers=sys.argv[1], request_timeout_ms=5000); a.list_topics(); a.close()' \
        "127.0.0.1:$2" >/dev/null 2>&1 ;;
    *) curl -fsS -m 5 "http://127.0.0.1:$2/_cluster/health" 2>/dev/null | grep -Eq '"status":"(green|yellow)"' ;;
  esac
}

running() {  # NAME: started by us, still alive and answering
  local pid port
  pid="$(cat "$RUN/$1.pid" 2>/dev/null)" && port="$(cat "$RUN/$1.port" 2>/dev/null)" || return 1
  group_alive "$pid" && ready "$1" "$port"
}

# launch NAME CMD...: run CMD as the leader of a new process group (down.sh kills the group)
launch() {
  local name=$1; shift
  setsid "$@" >"$RUN/$name/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  port_of "$name" >"$RUN/$name.port"
  case $name in  # read back by `up.sh --keep-data`: a kept server comes back on its own ports
    kafka) echo "KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT" ;;
    elasticsearch) echo "ES_PORT=$ES_PORT ES_TRANSPORT_PORT=$ES_TRANSPORT_PORT" ;;
    opensearch) echo "OS_PORT=$OS_PORT OS_TRANSPORT_PORT=$OS_TRANSPORT_PORT" ;;
  esac >"$RUN/$name/ports.env"
}

start_kafka() {
  local d="$RUN/kafka" jh id
  jh="$(java_home 17 99)" || die "kafka: no Java 17+ JDK found"
  mkdir -p "$d/data" "$d/logs"
  cat >"$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$d/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  # Cluster id: 16 random bytes, base64url without padding (what `StorageTool random-uuid`
  # prints; mapping +/ to letters keeps it valid and never starting with '-').
  id="$(head -c 16 /dev/urandom | base64 | tr -d '=' | tr '+/' 'AB')"
  local java=("$jh/bin/java" -cp "$KAFKA_HOME/libs/*" -Dkafka.logs.dir="$d/logs"
              -Dlog4j2.configurationFile="$SERVICES_DIR/kafka/log4j2.properties")
  # --keep-data: the log dir is formatted already (and keeps its cluster id, topics and offsets)
  [ -f "$d/data/meta.properties" ] \
    || "${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$d/server.properties" >"$d/logs/format.log" 2>&1 \
    || { cat "$d/logs/format.log" >&2; die "kafka: storage format failed"; }
  launch kafka "${java[@]}" -Xms"$HEAP" -Xmx"$HEAP" kafka.Kafka "$d/server.properties"
}

# ES and OpenSearch refuse to run as root: as root, run them as nobody with their own
# copy of config/ and data/logs dirs that nobody owns.
AS_SERVER_USER=()
[ "$(id -u)" != 0 ] || AS_SERVER_USER=(setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups)

prepare_search_dir() {  # NAME HOME
  local d="$RUN/$1"
  mkdir -p "$d/data" "$d/logs"
  if [ ! -d "$d/config" ]; then  # a restart with --keep-data has it already
    cp -r "$2/config" "$d/config"
    # jvm.options paths relative to the (read-only) home go to the run dir instead
    sed -i "s#logs/#$d/logs/#g; s#HeapDumpPath=data#HeapDumpPath=$d/data#" "$d/config/jvm.options"
  fi
  [ "$(id -u)" != 0 ] && return
  chown -R "$NOBODY:$NOBODY" "$d"
  "${AS_SERVER_USER[@]}" test -x "$2/bin" -a -w "$d/data" \
    || die "$1: user $NOBODY cannot reach $2 or $d (a parent directory is not world-searchable?)"
}

SEARCH_SETTINGS=(-E discovery.type=single-node -E cluster.routing.allocation.disk.threshold_enabled=false)

start_elasticsearch() {
  local d="$RUN/elasticsearch" jh
  jh="$(java_home 21 99)" || die "elasticsearch: needs a Java 21+ JDK (none found)"
  prepare_search_dir elasticsearch "$ES_HOME"
  local setting extra=()  # GW_ELASTICSEARCH_SETTINGS="key=value ...": static node settings of a test's own node
  for setting in ${GW_ELASTICSEARCH_SETTINGS:-}; do extra+=(-E "$setting"); done
  launch elasticsearch env ES_JAVA_HOME="$jh" ES_PATH_CONF="$d/config" ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
    "${AS_SERVER_USER[@]}" "$ES_HOME/bin/elasticsearch" "${SEARCH_SETTINGS[@]}" \
    -E xpack.security.enabled=false -E http.host=127.0.0.1 -E transport.host=127.0.0.1 \
    -E http.port="$ES_PORT" -E transport.port="$ES_TRANSPORT_PORT" -E path.data="$d/data" -E path.logs="$d/logs" "${extra[@]}"
}

start_opensearch() {
  local d="$RUN/opensearch" jh
  # OpenSearch 2.x needs the Java security manager, which Java 24+ removed
  jh="$(java_home 17 23)" || die "opensearch: needs a Java 17-23 JDK (none found)"
  prepare_search_dir opensearch "$OS_HOME"
  launch opensearch env OPENSEARCH_JAVA_HOME="$jh" OPENSEARCH_PATH_CONF="$d/config" \
    OPENSEARCH_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
    "${AS_SERVER_USER[@]}" "$OS_HOME/bin/opensearch" "${SEARCH_SETTINGS[@]}" -E network.host=127.0.0.1 \
    -E http.port="$OS_PORT" -E transport.port="$OS_TRANSPORT_PORT" -E path.data="$d/data" -E path.logs="$d/logs"
}

fail() {  # NAME REASON: show its log tail, stop all that this run started, exit
  echo "up: $1 $2; last log lines:" >&2
  local f
  for f in "$RUN/$1/logs/stdout.log" "$RUN/$1/logs/server.log"; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -n 40 "$f" >&2; }
  done
  "$SERVICES_DIR/down.sh" "${launched[@]}" >&2
  exit 1
}

# Start everything first (slowest first), then wait for all together.
t0=$SECONDS
launched=()
for s in elasticsearch opensearch kafka; do
  [[ " ${WANT[*]} " == *" $s "* ]] || continue
  if running "$s"; then echo "up: $s already running"; continue; fi
  if [ "$KEEP_DATA" = 1 ]; then
    rm -f "$RUN/$s.pid" "$RUN/$s.port"
    [ ! -f "$RUN/$s/ports.env" ] || . "$RUN/$s/ports.env"
  else
    "$SERVICES_DIR/down.sh" "$s" >/dev/null     # stale pid/run dir from an earlier run
  fi
  port_open "$(port_of "$s")" && die "$s: port $(port_of "$s") is taken by another process"
  "start_$s"
  launched+=("$s")
done

deadline=$((t0 + TIMEOUT))
started=("${launched[@]}")
while [ ${#started[@]} -gt 0 ]; do
  pending=()
  for s in "${started[@]}"; do
    if ready "$s" "$(port_of "$s")"; then echo "up: $s ready on 127.0.0.1:$(port_of "$s") after $((SECONDS - t0))s"
    elif ! group_alive "$(cat "$RUN/$s.pid")"; then fail "$s" "exited during startup"
    elif [ "$SECONDS" -ge "$deadline" ]; then fail "$s" "was not ready after ${TIMEOUT}s"
    else pending+=("$s"); fi
  done
  started=("${pending[@]}")
  [ ${#started[@]} -eq 0 ] || sleep 1
done

write_env
echo "up: env in $RUN/services.env"
