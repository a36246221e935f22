#!/usr/bin/env bash
# Installs the Debian packages the tests start for real (rsyslog, Prometheus, Chromium, ...),
# listed one a line in services/debian-packages.txt. Idempotent: only missing ones are fetched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
mapfile -t wanted < <(grep -v '^\s*\(#\|$\)' debian-packages.txt)
missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "services: installing Debian packages: ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
