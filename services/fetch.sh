#!/usr/bin/env bash
# Download the test servers into .cache/services/ (idempotent; a second run takes no network).
#   services/fetch.sh [kafka] [elasticsearch] [opensearch]     (default: all)
# Uses Maven Central through mvn and its local repository (~/.m2, or GW_M2_REPO if set).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_services "$@"
for tool in mvn unzip; do command -v "$tool" >/dev/null || die "$tool not found"; done
mkdir -p "$CACHE"

MVN=(mvn -q -B)
[ -z "${GW_M2_REPO:-}" ] || MVN+=("-Dmaven.repo.local=$GW_M2_REPO")
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

mvn_run() {  # quiet unless it fails
  local out
  out="$("${MVN[@]}" "$@" 2>&1)" || { echo "$out" >&2; die "mvn $* failed"; }
}

fetch_kafka() {
  [ -f "$KAFKA_HOME/.complete" ] && return
  echo "fetch: kafka $KAFKA_VERSION jars"
  rm -rf "$KAFKA_HOME"
  mvn_run -f "$SERVICES_DIR/kafka/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
    -Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$KAFKA_HOME/libs"
  touch "$KAFKA_HOME/.complete"
}

# fetch_zip GROUP:ARTIFACT VERSION DEST: download a distribution zip and unzip it once into DEST
fetch_zip() {
  local ga=$1 version=$2 dest=$3 tmp
  [ -f "$dest/.complete" ] && return
  echo "fetch: $ga:$version"
  tmp="$(mktemp -d "$CACHE/tmp.XXXXXX")"
  mvn_run "$DEP_PLUGIN:copy" -Dartifact="$ga:$version:zip" -DoutputDirectory="$tmp"
  unzip -q "$tmp"/*.zip -d "$tmp/x"
  rm -rf "$dest"
  mv "$tmp"/x/* "$dest"            # the zip holds one top-level directory
  rm -rf "$tmp"
  chmod -R a+rX "$dest"            # readable by the unprivileged user the server runs as
  chmod a+x "$dest"/bin/*          # in case unzip dropped the exec bits
  touch "$dest/.complete"
}

for s in "${WANT[@]}"; do
  case "$s" in
    kafka) fetch_kafka ;;
    elasticsearch) fetch_zip org.elasticsearch.distribution.integ-test-zip:elasticsearch "$ES_VERSION" "$ES_HOME" ;;
    opensearch) fetch_zip org.opensearch.distribution.integ-test-zip:opensearch "$OS_VERSION" "$OS_HOME" ;;
  esac
done
