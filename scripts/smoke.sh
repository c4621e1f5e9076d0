#!/usr/bin/env bash
# Offline smoke run of the installed `cns` on a tiny random Stable Diffusion pipeline built on the spot
# (no weights are downloaded): the whole loop — learn two concepts, generate, inspect, forget, undo,
# verify. It will give way to `cns demo` once the demo model ships.
set -euo pipefail
export HF_HUB_OFFLINE=1
work=$(mktemp -d "${TMPDIR:-/tmp}/cns-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CNS_BANK="$work/smoke.cnsbank"

python -m cns_cli.model.tiny "$work/tiny-sd" >/dev/null
python - "$work" <<'PY'
import sys, random
from pathlib import Path
from PIL import Image, ImageDraw
for name, colour in (("dog", (140, 80, 20)), ("hat", (20, 40, 160))):
    folder = Path(sys.argv[1]) / name
    folder.mkdir()
    rng = random.Random(name)
    for i in range(4):
        im = Image.new("RGB", (96, 96), tuple(rng.randrange(60, 200) for _ in range(3)))
        x, y = rng.randrange(8, 40), rng.randrange(8, 40)
        ImageDraw.Draw(im).ellipse([x, y, x + 44, y + 44], fill=colour)
        im.save(folder / f"{i}.png")
PY

cns learn dog "$work/dog" --base "$work/tiny-sd" --steps 20 --score-steps 2
cns learn hat "$work/hat" --steps 20 --score-steps 2
cns generate "<dog> wearing a <hat> on a beach" -n 2 --seed 7 --steps 4 --out "$work/out"
cns inspect --neurons
cns forget hat
cns undo
cns log
cns verify
# the same loop on a tiny SDXL pipeline (two text encoders, added conditioning)
python -m cns_cli.model.tiny "$work/tiny-xl" --family sdxl >/dev/null
export CNS_BANK="$work/xl.cnsbank"
cns learn dog "$work/dog" --base "$work/tiny-xl" --steps 10 --score-steps 2
cns generate "<dog> on a beach" -n 2 --seed 7 --steps 3 --out "$work/out-xl" --grid
cns export --format kohya "$work/xl-export"
cns forget dog
cns verify
echo "smoke run ok"
