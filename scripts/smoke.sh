#!/usr/bin/env bash
# Offline smoke run of the installed `cns` on a tiny random Stable Diffusion pipeline built on the spot
# (no weights are downloaded). It will give way to `cns demo` once the demo model ships.
set -euo pipefail
export HF_HUB_OFFLINE=1
work=$(mktemp -d "${TMPDIR:-/tmp}/cns-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CNS_BANK="$work/smoke.cnsbank"

python -m cns_cli.model.tiny "$work/tiny-sd" >/dev/null
cns init --base "$work/tiny-sd"
cns inspect
cns log
cns verify
echo "smoke run ok"
