# Shared settings for fetch.sh / up.sh / down.sh (sourced, not run).
SERVICES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SERVICES_DIR")"
CACHE="$REPO_ROOT/.cache/services"   # downloaded servers (kept)
RUN="${GW_SERVICES_RUN:-$REPO_ROOT/.cache/run}"  # pids, data, logs of running servers (removed by down.sh)

KAFKA_VERSION=4.1.1
ES_VERSION=9.2.0
OS_VERSION=2.19.6
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
ES_HOME="$CACHE/elasticsearch-$ES_VERSION"
OS_HOME="$CACHE/opensearch-$OS_VERSION"

KAFKA_PORT="${GW_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${GW_KAFKA_CONTROLLER_PORT:-19093}"
ES_PORT="${GW_ELASTICSEARCH_PORT:-19200}"
ES_TRANSPORT_PORT="${GW_ELASTICSEARCH_TRANSPORT_PORT:-19300}"
OS_PORT="${GW_OPENSEARCH_PORT:-19201}"
OS_TRANSPORT_PORT="${GW_OPENSEARCH_TRANSPORT_PORT:-19301}"
TIMEOUT="${GW_SERVICES_TIMEOUT:-180}"   # seconds to wait for readiness
HEAP="${GW_SERVICES_HEAP:-512m}"
NOBODY=65534                            # ES/OpenSearch refuse to run as root

ALL_SERVICES=(kafka elasticsearch opensearch)

die() { echo "services: $*" >&2; exit 1; }

# parse_services [--keep-data] NAME... -> sets WANT (default: all) and KEEP_DATA; rejects unknown names
parse_services() {
  KEEP_DATA=0
  if [ "${1:-}" = --keep-data ]; then KEEP_DATA=1; shift; fi
  WANT=("$@")
  [ ${#WANT[@]} -gt 0 ] || WANT=("${ALL_SERVICES[@]}")
  local s
  for s in "${WANT[@]}"; do
    case "$s" in kafka|elasticsearch|opensearch) ;; *) die "unknown service '$s' (kafka|elasticsearch|opensearch)";; esac
  done
}

# Is any non-zombie process left in process group $1?
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# java_home MIN MAX: print the home of an installed JDK whose major version is in [MIN, MAX]
# (JAVA_HOME, then the `java` on PATH, then /usr/lib/jvm/*).
java_home() {
  local h v path_java
  path_java="$(command -v java || true)"
  [ -z "$path_java" ] || path_java="$(dirname "$(dirname "$(readlink -f "$path_java")")")"
  for h in "${JAVA_HOME:-}" "$path_java" /usr/lib/jvm/*; do
    [ -n "$h" ] && [ -x "$h/bin/java" ] || continue
    v="$("$h/bin/java" -version 2>&1 | awk -F'"' '/version/ { split($2, a, "."); print a[1]; exit }')"
    if [ -n "$v" ] && [ "$v" -ge "$1" ] && [ "$v" -le "$2" ]; then echo "$h"; return; fi
  done
  return 1
}

write_env() {  # .cache/run/services.env from the ports of the services that have a pid file
  local s port
  for s in "${ALL_SERVICES[@]}"; do
    [ -f "$RUN/$s.pid" ] && port="$(cat "$RUN/$s.port" 2>/dev/null)" || continue
    case $s in
      kafka) echo "GW_KAFKA_BOOTSTRAP=127.0.0.1:$port" ;;
      elasticsearch) echo "GW_ELASTICSEARCH_URL=http://127.0.0.1:$port" ;;
      opensearch) echo "GW_OPENSEARCH_URL=http://127.0.0.1:$port" ;;
    esac
  done >"$RUN/services.env"
}
