#!/usr/bin/env bash
# Run the whole suite: lint (ruff), types (mypy), unit tests (no root) and functional tests
# (real OVS in namespaces). pytest's exit code 5 ("no tests collected") is a failure here: a
# suite that ran nothing proves nothing.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${OVSVNET_VENV:-$here/.venv}
cd "$here" || exit 1
"$venv/bin/ruff" check ovsvnet tests bench docs/gen_reference.py || exit 1
"$venv/bin/mypy" ovsvnet || exit 1
"$venv/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "run-tests: pytest collected no tests" >&2
  exit 1
fi
exit $rc
