#!/usr/bin/env bash
# The whole test suite against real servers: start them, run pytest, always stop them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Types first (settings in pyproject.toml [tool.mypy]): seconds, and no server needed.
.venv/bin/mypy
services/debian.sh
trap 'services/down.sh' EXIT
services/up.sh
set -a; . .cache/run/services.env; set +a
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
