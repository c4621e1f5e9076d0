"""`cns relocate`: point a bank at its base model's new place (a moved folder or file, or another config folder
for a single-file base), as a new revision (operation `relocate`, format 1.4). The model found there must
fingerprint to what the bank records, so a bank can never be re-pointed at another model."""

from __future__ import annotations

from pathlib import Path

from .bank import Bank, BaseModelPointer, Operation, Revision
from .errors import ModelMismatchError, UsageError


def relocate(bank_path: Path, base: str | None, config: Path | None = None,
             argv: list[str] | None = None) -> tuple[Revision, BaseModelPointer]:
    """Commit a revision whose base pointer names `base` (and `config`) instead of the recorded place; returns it
    and the old pointer. The model is loaded and fingerprinted under the writer lock, before anything is written."""
    from .model.loading import fingerprint, load_pipeline

    if base is None and config is None:
        raise UsageError("pass the base model's new place (`cns relocate PATH`) and/or --config DIR")
    bank = Bank.open(bank_path)
    with bank.transaction() as tx:
        old = tx.parent.base
        spec = _new_spec(old, base, config)
        if (spec.kind, spec.location, spec.revision, spec.config) == (old.kind, old.location, old.revision, old.config):
            raise UsageError(f"nothing to relocate: the bank already points at {_place(spec)}")
        got = fingerprint(load_pipeline(spec).unet)
        if got != old.fingerprint.digest:
            raise ModelMismatchError(
                f"{spec.location} is not the base model this bank was built on (fingerprint {got[:12]}… vs "
                f"{old.fingerprint.digest[:12]}…); nothing was changed: pass the place of the model it was built on")
        new = old.model_copy(update={"kind": spec.kind, "location": spec.location, "revision": spec.revision,
                                     "config": spec.config})
        return tx.commit(Operation(kind="relocate", argv=argv or []), base=new), old


def _new_spec(old: BaseModelPointer, base: str | None, config: Path | None):
    """What to load: `base` (with `config`); `config` alone re-points a single-file base's config folder; a
    single-file `base` without `config` keeps the recorded config folder while it is still there."""
    from .model.loading import BaseSpec, _config_folder, resolve_base

    if base is None:
        if old.kind != "single-file":
            raise UsageError(f"--config alone changes the config folder of a single .safetensors base; this bank's "
                             f"base {old.location} is a {old.kind}: pass its new place, `cns relocate PATH`")
        return BaseSpec(old.kind, old.location, old.revision, _config_folder(config))
    spec = resolve_base(base, config)
    if spec.kind == "single-file" and spec.config is None and old.config and (Path(old.config) / "model_index.json").is_file():
        spec = BaseSpec(spec.kind, spec.location, spec.revision, old.config)
    return spec


def _place(spec) -> str:
    return spec.location + (f"@{spec.revision}" if spec.revision else "") + (f" (configs {spec.config})" if spec.config else "")
