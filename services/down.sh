#!/usr/bin/env bash
# Stop what services/up.sh started: signal each whole process group, wait until it is gone,
# remove its run dir. Safe to call when nothing runs.
#   services/down.sh [kafka] [elasticsearch] [opensearch]     (default: all)
#   services/down.sh --keep-data NAME...   stop, but keep the run dir (data) for `up.sh --keep-data`
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_services "$@"
[ -d "$RUN" ] || exit 0

stopping=()
for s in "${WANT[@]}"; do
  pid="$(cat "$RUN/$s.pid" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] || continue
  if group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true   # up.sh made each server a process group leader
    stopping+=("$s:$pid")
  fi
done

deadline=$((SECONDS + ${GW_SERVICES_STOP_TIMEOUT:-60}))
for e in "${stopping[@]}"; do
  s=${e%%:*} pid=${e#*:}
  while group_alive "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "down: $s still running, sending SIGKILL" >&2
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  echo "down: $s stopped"
done

for s in "${WANT[@]}"; do
  rm -f "$RUN/$s.pid" "$RUN/$s.port"
  [ "$KEEP_DATA" = 1 ] || rm -rf "${RUN:?}/$s"
done
if compgen -G "$RUN/*.pid" >/dev/null || [ "$KEEP_DATA" = 1 ]; then write_env; else rm -rf "$RUN"; fi
