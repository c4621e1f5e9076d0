"""The bank library must stay light: inspect/log/verify start in milliseconds, so no torch or diffusers."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "diffusers", "transformers", "safetensors.torch"]


def test_bank_imports_nothing_heavy(tmp_path):
    script = f"""
import json, sys
import cns_cli.bank, cns_cli.bank.verify, cns_cli.bank.history, cns_cli.bank.layout, cns_cli.bank.schema
import cns_cli.errors
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).resolve().parent)!r})
import bankfactory as bf
from cns_cli.bank.verify import verify
bank = bf.build_bank({str(tmp_path / 'b')!r}, 1)  # use it too: lazy imports inside functions count
from cns_cli.bank.history import forget, undo
assert verify(bank).ok
forget(bank, "concept-0")
undo(bank)
bank.read_object(bank.head().concepts["concept-0"].delta)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "diffusers", "transformers"}} or m == "safetensors.torch")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"the bank library imported {loaded}"
    assert all(m not in loaded for m in HEAVY)
