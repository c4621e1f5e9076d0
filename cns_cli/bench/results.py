"""One method's result on disk, and bench.json assembled from them.

Each finished method leaves two files, written atomically, images first (the JSON vouches for them):

    OUT/images/KEY.safetensors   the contact-sheet images it drew ({"concepts/NAME": uint8 (n, h, w, 3), group key: ...})
    OUT/methods/KEY.json         {"method": KEY, "config": the run's config doc, "entry": its bench.json entry}

So a method's result does not depend on which process ran it or on which ran the others: bench.json is rebuilt
from these files, in the config's method order, by the one process that writes it (rank 0). A method counts as
finished when both files are there and its config is the run's; runs written before these files existed kept
the entries in bench.json only, and resume from that (`finished`, which then writes the method's JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def differing(wanted: dict, recorded: dict) -> list[str]:
    """The config keys on which two runs differ, "methods" aside (a resumed run may add or drop methods)."""
    return [k for k in sorted(set(wanted) | set(recorded)) if k != "methods" and wanted.get(k) != recorded.get(k)]


def entry_path(out: Path, key: str) -> Path:
    return out / "methods" / f"{key}.json"


def images_path(out: Path, key: str) -> Path:
    return out / "images" / f"{key}.safetensors"


def save_method(out: Path, key: str, config_doc: dict, entry: dict, images: dict) -> None:
    """The method's images, then its JSON: a JSON on disk means its images are whole."""
    save_images(images_path(out, key), images)
    write_json(entry_path(out, key), {"method": key, "config": config_doc, "entry": entry})


def load_entry(out: Path, key: str, config_doc: dict) -> dict | None:
    """The entry of `key` if it finished in this run (its JSON and images exist, its config is `config_doc`),
    else None: never ran, was interrupted, or its file is unreadable or from other settings."""
    path = entry_path(out, key)
    if not path.is_file() or not images_path(out, key).is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc["method"] != key or differing(config_doc, doc["config"]) or not isinstance(doc["entry"], dict):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    return doc["entry"]


def finished(out: Path, keys: tuple[str, ...], config_doc: dict, earlier: dict) -> dict[str, dict]:
    """{key: entry} of the methods of `keys` an earlier run in `out` finished (`earlier`: its bench.json). A method
    of a run from before the per-method files (its entry in bench.json, its images in OUT/images) gets its
    JSON written here, so that from now on the files alone say what is finished."""
    done = {}
    for key in keys:
        entry = load_entry(out, key, config_doc)
        old = earlier.get("methods", {}).get(key)
        if entry is None and isinstance(old, dict) and images_path(out, key).is_file():
            write_json(entry_path(out, key), {"method": key, "config": config_doc, "entry": old})
            entry = old
        if entry is not None:
            done[key] = entry
    return done


def assemble(out: Path, skeleton: dict, keys: tuple[str, ...]) -> dict:
    """bench.json's document: `skeleton` (config, base, concepts, resumed) with the entry of every method of
    `keys` finished so far, in that order, whichever process ran it."""
    doc = {**skeleton, "methods": {}}
    for key in keys:
        entry = load_entry(out, key, skeleton["config"])
        if entry is not None:
            doc["methods"][key] = entry
    return doc


def save_images(path: Path, images: dict) -> None:
    """{"concepts": {name: uint8 (n, h, w, 3)}, group key: uint8 (n, h, w, 3)} as safetensors, atomically."""
    from safetensors.numpy import save

    from ..bank.atomic import atomic_write

    flat = {f"concepts/{n}": np.ascontiguousarray(a) for n, a in images["concepts"].items()}
    flat.update({k: np.ascontiguousarray(a) for k, a in images.items() if k != "concepts"})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(flat))


def load_images(path: Path) -> dict:
    from safetensors.numpy import load_file

    flat = load_file(str(path))
    out: dict = {"concepts": {}}
    for k, a in flat.items():
        if k.startswith("concepts/"):
            out["concepts"][k.split("/", 1)[1]] = a
        else:
            out[k] = a
    return out


def write_json(path: Path, doc: dict) -> None:
    from ..bank.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
