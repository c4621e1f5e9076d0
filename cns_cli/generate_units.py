"""The units of `cns generate` and how they run: in one process one after another, under a launcher shared out.

A unit is one pipeline call of the one-process loop: a prompt and a chunk of up to --batch-size of its seeds.
Everything an image depends on travels with its unit (its seeds and CPU generators, its prompt index, which names
the file), so a unit draws the same pixels, name and metadata on any rank.

Under a launcher (distributed.py) the units still to draw are dealt round-robin (distributed.shard): round r gives
pending units r*W .. r*W+W-1 to ranks 0..W-1, then every rank shares its records (all_gather) and its failure, if
any. The main process passes the records on in one-process order as soon as every earlier unit is in, so stdout
streams exactly what one process would print; a failure stops every rank after that round, with one message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import distributed as dist


class Unit(NamedTuple):
    prompt: int  # index of the prompt (the file name's {prompt index})
    seeds: tuple[int, ...]  # this call's seeds: a chunk of --batch-size
    first: int  # index of its first image in the run (prompt-major), for the progress label


Draw = Callable[[Unit, Callable[[dict], None]], None]  # draws a unit, handing each image's record to the callback
Finished = Callable[[Unit], "list[dict] | None"]  # the unit's records if its images are already on disk


def units_of(prompts: int, n: int, batch_size: int, seed: int) -> list[Unit]:
    """The pipeline calls of a run in one-process order: per prompt, its seeds seed..seed+n-1 in chunks."""
    seeds = [seed + i for i in range(n)]
    return [Unit(k, tuple(seeds[at : at + batch_size]), k * n + at)
            for k in range(prompts) for at in range(0, n, batch_size)]


def run_units(units: list[Unit], draw: Draw, finished: Finished | None, on_record: Callable[[dict], None] | None,
              progress) -> list[dict]:
    """Every unit's records in one-process order (on every rank); `on_record` hears each once, on the main
    process, in that order. `finished` (--skip-existing) says which units need no drawing."""
    if dist.launched():
        return _shared_out(units, draw, finished, on_record, progress)
    records: list[dict] = []

    def emit(record: dict) -> None:
        records.append(record)
        if on_record:
            on_record(record)

    for unit in units:
        progress.call(unit.first, len(unit.seeds))
        done = finished(unit) if finished else None
        if done is not None:
            for record in done:
                emit(record)
        else:
            draw(unit, emit)
    return records


def _shared_out(units: list[Unit], draw: Draw, finished: Finished | None, on_record, progress) -> list[dict]:
    """run_units under a launcher (module docstring)."""
    # the main process decides what is already on disk, so every rank deals the same pending units
    done = dist.on_main(lambda: [finished(u) for u in units]) if finished else [None] * len(units)
    ready = {i: recs for i, recs in enumerate(done) if recs is not None}  # unit index -> its records
    pending = [i for i, recs in enumerate(done) if recs is None]
    out = _InOrder(on_record)
    out.flush(ready, len(units))
    images = sum(len(units[i].seeds) for i in ready)
    for first in range(0, len(pending), dist.size()):
        round_ = pending[first : first + dist.size()]  # one unit per rank; the last round may leave ranks idle
        mine = [round_[r] for r in dist.shard(len(round_), dist.rank(), dist.size())]  # one unit, or none
        count = sum(len(units[i].seeds) for i in round_)
        progress.call(images, count)  # the main process's bar: this round's images, its own call's steps
        records: list[dict] = []
        failure = None
        if mine:
            _, failure = dist.attempt(draw, units[mine[0]], records.append)
        shared = dist.all_gather((records, failure))
        failed = [i for i, (_, f) in zip(round_, shared) if f is not None]
        ready.update((i, recs) for i, (recs, _) in zip(round_, shared))  # a failed unit: the images it wrote
        out.flush(ready, min(failed) + 1 if failed else len(units))
        dist.raise_failures([f for _, f in shared])
        images += count
    return out.records


class _InOrder:
    """Records in one-process order: unit i's are passed on once units 0..i are all in."""

    def __init__(self, on_record) -> None:
        self.on_record, self.next, self.records = on_record, 0, []

    def flush(self, ready: dict[int, list[dict]], stop: int) -> None:
        """Pass on the ready units from the next one on, up to (not including) unit `stop` or the first missing."""
        while self.next < stop and self.next in ready:
            for record in ready[self.next]:
                self.records.append(record)
                if self.on_record and dist.is_main():
                    self.on_record(record)
            self.next += 1
