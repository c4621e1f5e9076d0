"""The `cns` command line: parse, call one use case, print. No logic lives here.

Heavy libraries (torch, diffusers) are imported inside the use cases, so `cns --help` stays instant.
Every command runs through `_handled`, the one place where errors become messages and exit codes:
CnsError -> its message, exit 2; an OSError the environment caused (read-only, disk full, no permission:
errors.from_os_error) -> a line naming the path, exit 2; Ctrl-C -> exit 130, SIGTERM -> 143 (interrupt.py);
stdout closed by its reader (`| head`) -> quietly, exit 141 like any Unix tool ended by SIGPIPE; anything else ->
"internal error", exit 101.
CNS_DEBUG=1 shows tracebacks instead. The installed `cns` script is `run()`, which also makes Ctrl-C
work during long native operations (interrupt.py).

Under a launcher (torchrun, accelerate launch: distributed.py) only `@command(distributed=True)` commands run
(`generate`, `learn`, `bench`); the others refuse with one line. An error shared by every rank is printed by rank 0 only; an error
of one rank alone is printed by it, prefixed "[rank N]".
"""

from __future__ import annotations

import functools
import inspect as pyinspect
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import output
from .about import DEFAULT_BASE, __version__
from .errors import CHECK_FAILED_EXIT, INTERNAL_ERROR_EXIT, CnsError, from_os_error
from .usage import CnsCommand, CnsGroup

app = typer.Typer(
    cls=CnsGroup,  # click's usage errors: one line, exit 2 (usage.py)
    name="cns",
    help="Teach one Stable Diffusion model your own concepts, one at a time, and keep them all.\n\n"
    "Example: cns learn dog ./photos && cns generate '<dog> on a beach' --seed 7",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: no "<bool>" after flags, no panels cut at 80 columns
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]


def _handled(fn):
    """Map every failure of a command to a one-line message and an exit code (see module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            _refuse_undecodable_paths(kwargs)
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except CnsError as e:
            if os.environ.get("CNS_DEBUG") == "1":
                raise
            _error(str(e), quiet=getattr(e, "quiet", False))
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:  # the reader of stdout is gone: stop quietly, nothing is half-written
            output.silence_stdout()
            raise typer.Exit(output.BROKEN_PIPE_EXIT) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (interrupt.Terminated)
            from . import interrupt

            _error(interrupt.describe(e))
            raise typer.Exit(interrupt.exit_code(e)) from None
        except Exception as e:  # a bug: say so plainly, keep the traceback for CNS_DEBUG=1
            if os.environ.get("CNS_DEBUG") == "1":
                raise
            known = from_os_error(e)  # unless the OS refused a file operation: read-only, disk full, ...
            if known is not None:
                _error(str(known))
                raise typer.Exit(known.exit_code) from None
            _error(f"internal error: {type(e).__name__}: {e} (rerun with CNS_DEBUG=1 and report it)")
            raise typer.Exit(INTERNAL_ERROR_EXIT) from None

    return wrapper


def _error(message: str, quiet: bool = False) -> None:
    """The `error:` line. Under a launcher an error every rank shares (distributed.DistributedError) is printed by
    the main process only (`quiet` elsewhere); one rank's own error names its rank."""
    from . import distributed

    if quiet:
        return
    output.error(message if distributed.is_main() else f"[rank {distributed.rank()}] {message}")


def _one_process(fn):
    """A command not built to run across processes refuses a launcher (N copies of it would each do all the work,
    and write to the same bank), with one line from the main process."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from . import distributed

        if distributed.launched():
            raise distributed.DistributedError(
                f"`cns {fn.__name__}` runs in one process only; start it without torchrun / accelerate launch "
                "(see docs/distributed.md for the commands that run across processes)", quiet=not distributed.is_main())
        return fn(*args, **kwargs)

    return wrapper


def _finishing(fn):
    """A command that runs across processes: when it ends well, every rank leaves the process group together
    (distributed.finish; nothing in one process)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from . import distributed

        result = fn(*args, **kwargs)
        distributed.finish()
        return result

    return wrapper


def _refuse_undecodable_paths(kwargs: dict) -> None:
    """A path argument whose bytes are not UTF-8 (Python hands them over as surrogate escapes) is refused before
    the command runs: cns prints, records (revisions, PNG text, JSON) and compares paths as UTF-8 text, and in a
    strict UTF-8 locale printing such a name would fail half way through a command."""
    from .errors import UsageError

    for name, value in kwargs.items():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(path, Path) or (name == "base" and isinstance(path, str)):
                try:
                    str(path).encode("utf-8")
                except UnicodeEncodeError:
                    shown = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
                    raise UsageError(f"the path {shown!r} is not UTF-8 text; cns reads and records paths as UTF-8: "
                                     "rename it, or pass a link with a UTF-8 name") from None


def _bank_path(text: str | Path) -> Path:
    """--bank's value as a path. Parsed from the text (typer's Path would turn '' into '.', the current folder,
    which nobody means as a bank); an empty value is refused, with one line, where the command runs. (The
    default arrives as a Path already.)"""
    if isinstance(text, Path):
        return text
    return Path(text) if text.strip() else _EMPTY_BANK


_EMPTY_BANK = Path("\0empty --bank")  # a marker no real path equals (paths cannot hold NUL)


def _check_bank_path(bank: Path) -> Path:
    from .errors import UsageError

    if bank == _EMPTY_BANK:
        raise UsageError("--bank is empty; pass the bank folder, e.g. --bank my.cnsbank (default .cnsbank)")
    _refuse_undecodable_paths({"bank": bank})
    if "\0" in str(bank):  # no file name holds NUL; the OS would refuse it with a ValueError, not an OSError
        raise UsageError(f"--bank {str(bank)!r} contains a NUL character, which no path can hold; pass the bank folder")
    return bank


BankHere = Annotated[Optional[Path], typer.Option("--bank", parser=_bank_path, metavar="PATH", help="The bank folder (also accepted before the command; default .cnsbank or $CNS_BANK).", show_default=False)]


def _bank_option_too(fn):
    """`fn` with a `--bank` option of its own, so `cns learn dog ./photos --bank my.cnsbank` works like
    `cns --bank my.cnsbank learn ...`: the value lands in ctx.obj, where every bank command reads it."""
    sig = pyinspect.signature(fn, eval_str=True)
    extra = pyinspect.Parameter("bank_here", pyinspect.Parameter.KEYWORD_ONLY, default=None, annotation=BankHere)

    @functools.wraps(fn)
    def wrapper(*args, bank_here: Optional[Path] = None, **kwargs):
        if bank_here is not None:
            kwargs["ctx"].obj = bank_here
        _check_bank_path(kwargs["ctx"].obj)
        return fn(*args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])
    wrapper.__annotations__ = {**fn.__annotations__, "bank_here": BankHere}
    return wrapper


def command(*args, bank: bool = True, distributed: bool = False, **kwargs):
    """`@app.command` with error handling applied and, for commands on a bank, `--bank` after the command;
    `distributed`: the command runs across the processes of a launcher (the others refuse one)."""

    def register(fn):
        body = _bank_option_too(fn) if bank else fn
        return app.command(*args, cls=CnsCommand, **kwargs)(_handled(_finishing(body) if distributed else _one_process(body)))

    return register


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cns {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    bank: Annotated[Path, typer.Option("--bank", envvar="CNS_BANK", parser=_bank_path, metavar="PATH", help="The bank folder.", show_default=True)] = Path(".cnsbank"),
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = None,
) -> None:
    ctx.obj = bank


def _argv() -> list[str]:
    return ["cns", *sys.argv[1:]]


def _result(json_: bool, doc: dict, line: str) -> None:
    """A command's result on stdout: the JSON document, or one line for people."""
    output.emit_json(doc) if json_ else typer.echo(line)


def _concepts(doc: dict) -> str:
    return ", ".join(doc["concepts"]) or "no concepts"


def _open(ctx: typer.Context):
    from .bank import Bank

    return Bank.open(ctx.obj)


# -- bank commands -----------------------------------------------------------------------------------


@command()
def init(
    ctx: typer.Context,
    base: Annotated[str, typer.Option("--base", help="SD 1.x, SD 2.x or SDXL model: hub id (org/model[@revision]), diffusers folder or .safetensors file.")] = DEFAULT_BASE,
    config: Annotated[Optional[Path], typer.Option("--config", help="For a .safetensors --base: a diffusers folder of the same family (configs and tokenizers; no weights needed), so it loads offline.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Create an empty bank on top of a base model (records where it is, its family and its fingerprint)."""
    from .init_bank import init_bank

    rev = init_bank(ctx.obj, base, argv=_argv(), config=config)
    if json_:
        output.emit_json({"bank": str(ctx.obj), "revision": rev.number, "base": rev.base.model_dump(mode="json")})
    else:
        from .model.family import NAMES

        output.info(f"created bank {ctx.obj} on {rev.base.location} ({NAMES[rev.base.family_name]}, "
                    f"{len(rev.base.kv_layers)} K/V layers)")
        typer.echo(str(ctx.obj))


@command()
def inspect(
    ctx: typer.Context,
    neurons: Annotated[bool, typer.Option("--neurons", help="Per concept and layer: neurons owned and overlaps.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Show the concepts in the bank, their sizes and the capacity left."""
    from .inspect import inspect_bank
    from .render import render_inspect

    doc = inspect_bank(_open(ctx), neurons=neurons)
    output.emit_json(doc) if json_ else render_inspect(doc, neurons)


@command()
def log(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List the bank's revisions, newest first."""
    from .render import log_entries, render_log

    entries = log_entries(_open(ctx))
    output.emit_json({"revisions": entries}) if json_ else render_log(entries)


@command()
def verify(
    ctx: typer.Context,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 for damage in older revisions too (by default a warning: HEAD, the revision in use, is healthy).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Check every revision and object (hashes, sizes, shapes). Exit 1 if HEAD (the revision in use) is damaged."""
    from .bank.verify import verify as run_verify
    from .render import render_verify

    report = run_verify(_open(ctx), strict=strict)
    output.emit_json(report.to_json()) if json_ else render_verify(report)
    if not report.ok:
        raise typer.Exit(CHECK_FAILED_EXIT)


@command()
def undo(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Go back one operation. Recorded as a new revision, so nothing is ever lost (see `cns log`)."""
    from .bank.history import undo as run_undo

    rev = run_undo(_open(ctx), argv=_argv())
    doc = {"revision": rev.number, "undone": rev.operation.undone, "restores": rev.operation.restores,
           "concepts": sorted(rev.concepts)}
    _result(json_, doc, f"undid revision {doc['undone']}; now at revision {rev.number} "
                        f"(the state of revision {doc['restores']}: {_concepts(doc)})")


@command()
def forget(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The concept to remove.")], json_: JsonOpt = False) -> None:
    """Remove a concept exactly: its delta and token are dropped, every other concept is untouched."""
    from .bank.history import forget as run_forget

    rev = run_forget(_open(ctx), name, argv=_argv())
    doc = {"revision": rev.number, "forgot": name, "concepts": sorted(rev.concepts)}
    _result(json_, doc, f"forgot {name}; now at revision {rev.number} (`cns undo` brings it back)")


@command()
def restore(
    ctx: typer.Context,
    rev: Annotated[str, typer.Argument(metavar="REV", help="The revision whose state to bring back (see `cns log`, or `cns verify` when HEAD is damaged).")],
    json_: JsonOpt = False,
) -> None:
    """Bring back the state of any revision as a new revision: redo, checkout or rollback. Works on a damaged HEAD."""
    from .bank.history import restore as run_restore

    new = run_restore(_open(ctx), rev, argv=_argv(), on_broken_head=output.warn)
    doc = {"revision": new.number, "restores": new.operation.restores, "parent": new.parent,
           "concepts": sorted(new.concepts)}
    _result(json_, doc, f"restored revision {doc['restores']}; now at revision {new.number} ({_concepts(doc)})")


@command()
def relocate(
    ctx: typer.Context,
    base: Annotated[Optional[str], typer.Argument(metavar="[PATH]", help="The base model's new place: diffusers folder, .safetensors file or hub id.", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="For a .safetensors base: the diffusers folder (configs and tokenizers) it loads with, if that moved.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Point the bank at its base model's new place (moved folder, file or --config folder); the model must fingerprint to the bank's."""
    from .relocate import relocate as run_relocate

    rev, old = run_relocate(ctx.obj, base, config, argv=_argv())
    doc = {"revision": rev.number, "base": rev.base.model_dump(mode="json"), "was": old.model_dump(mode="json")}
    place = rev.base.location + (f" (configs {rev.base.config})" if rev.base.config else "")
    _result(json_, doc, f"the bank now points at {place}; now at revision {rev.number}")


# -- model commands ----------------------------------------------------------------------------------


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Selection(str, Enum):
    attribution = "attribution"
    random = "random"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class SliceKind(str, Enum):
    shared = "shared"
    concept = "concept"


class ExportFormat(str, Enum):
    kohya = "kohya"
    diffusers = "diffusers"
    embedding = "embedding"
    pipeline = "pipeline"


@command(distributed=True)
def learn(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Concept name; the prompt token is <name>.")],
    images: Annotated[Path, typer.Argument(help="Folder of images in any format Pillow reads (jpg, png, webp, gif, tiff, ...; the first frame of an animation) + optional same-named .txt captions.")],
    class_word: Annotated[Optional[str], typer.Option("--class", help="What the concept is, in a word the model knows (dog, hat, person): the token starts there and prompts say it. Default: NAME, with a warning.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help=f"Base model of a new bank (default {DEFAULT_BASE}); for an existing bank it must be the bank's own base.")] = None,
    base_config: Annotated[Optional[Path], typer.Option("--config", help="For a .safetensors base: a diffusers folder of the same family (configs and tokenizers; no weights needed), so it loads offline; on an existing bank it replaces the recorded folder for this run.")] = None,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 400,
    lr: Annotated[float, typer.Option(help="Learning rate of the neuron coefficients.")] = 1e-3,
    lr_token: Annotated[float, typer.Option(help="Learning rate of the token embedding.")] = 1e-3,
    rank: Annotated[int, typer.Option(help="Basis slice width r of this concept.")] = 4,
    slice_: Annotated[SliceKind, typer.Option("--slice", help="shared: r free columns of the bank's basis; concept: the concept's own r directions, chosen from its text states after a token warm-up (format 1.3).")] = SliceKind.shared,
    vectors: Annotated[int, typer.Option(help="Vectors of the concept's token (1-16): <name> stands for that many prompt positions, the tokens <name>, <name>_1, ... (diffusers' multi-vector textual inversion).")] = 1,
    budget: Annotated[float, typer.Option(help="Share of UNet parameters a concept may train (0.0013 = 0.13 %).")] = 0.0013,
    max_drift: Annotated[str, typer.Option("--max-drift", help="Drift budget: the largest mean squared relative change the concept may make to the K/V outputs of protected prompts (calibration, the class without the token, earlier concepts), per layer; 'off' for none.")] = "0.1",
    reg_lambda: Annotated[float, typer.Option(help="Weight of the older self-regularisation penalty (in K/V units, so its meaning changes with the model); 0 = off.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = 1,
    resolution: Annotated[Optional[int], typer.Option(help="Training resolution (default: the model's).")] = None,
    score_steps: Annotated[int, typer.Option(help="Batches used to score neurons.")] = 16,
    selection: Annotated[Selection, typer.Option(help="How concept neurons are chosen: attribution (CNS) or random (an ablation).")] = Selection.attribution,
    keep_general: Annotated[bool, typer.Option("--keep-general-neurons", help="Ablation: leave general neurons among the candidates.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    precision: Annotated[Precision, typer.Option(help="auto = bf16 autocast on a GPU, fp32 on CPU.")] = Precision.auto,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in the backward pass: less memory, slower steps.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Re-learn an existing concept.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    dist_timeout: Annotated[Optional[float], typer.Option("--dist-timeout", metavar="SECONDS", help="Under torchrun / accelerate launch: how long the processes wait for a silent one before the run ends (default $CNS_DIST_TIMEOUT or 1800).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Teach the model a new concept from a folder of images."""
    from . import distributed
    from .learn import LearnConfig, learn as run_learn
    from .reporting import NullReporter, for_stderr
    from .render import render_learn

    distributed.check_timeout_flag(dist_timeout)

    config = LearnConfig(steps=steps, lr=lr, lr_token=lr_token, rank=rank, vectors=vectors, budget=budget, reg_lambda=reg_lambda,
                         max_drift=_max_drift(max_drift), slice=slice_.value,
                         batch_size=batch_size, resolution=resolution, score_steps=score_steps, seed=seed,
                         selection=selection.value, remove_general=not keep_general,
                         device=device.value, precision=precision.value, gradient_checkpointing=gradient_checkpointing)
    outcome = run_learn(ctx.obj, name, images, class_word=class_word, base=base, base_config=base_config, config=config, replace=replace,
                        dry_run=dry_run, argv=_argv(), reporter=for_stderr() if distributed.is_main() else NullReporter(),
                        dist_timeout=dist_timeout)
    if not distributed.is_main():  # the main process reports, once
        return
    doc = {"concept": outcome.name, "dry_run": dry_run, "revision": outcome.revision, "plan": outcome.plan,
           "stats": outcome.stats}
    output.emit_json(doc) if json_ else render_learn(doc)


def _max_drift(text: str) -> float | None:
    """--max-drift: a number in (0, 1] (LearnConfig checks the range) or 'off'."""
    from .errors import UsageError

    if text.strip().lower() in ("off", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--max-drift must be a number in (0, 1] or off, got {text!r}") from None


@command(distributed=True)
def generate(
    ctx: typer.Context,
    prompts: Annotated[list[str], typer.Argument(help="Prompts; '-' reads one per line from stdin. <name> = a concept.")],
    n: Annotated[int, typer.Option("-n", help="Images per prompt.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the first image; image i uses seed+i.")] = 0,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 30,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale, 0 to 100.")] = 7.5,
    width: Annotated[Optional[int], typer.Option(help="Width in pixels (default: the model's).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Height in pixels (default: the model's).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNGs.")] = Path("cns-out"),
    expand: Annotated[bool, typer.Option("--expand/--no-expand", help="Expand <name> to '<name> class'.")] = True,
    device: Annotated[Device, typer.Option(help="Where to run.")] = Device.auto,
    precision: Annotated[Precision, typer.Option(help="auto = bf16/fp16 on a GPU, fp32 on CPU (bit-exact).")] = Precision.auto,
    region: Annotated[Optional[list[str]], typer.Option("--region", metavar="BOX", help="A concept's box: '<name>=x0,y0,x1,y1' as fractions, origin top left (repeatable).")] = None,
    layout: Annotated[Optional[str], typer.Option("--layout", help="auto: one equal column per concept, left to right in order of mention.")] = None,
    region_prompt: Annotated[Optional[list[str]], typer.Option("--region-prompt", metavar="TEXT", help="'<name>=TEXT': what the concept's box reads instead of 'a <name> class' + the prompt's closing words (repeatable).")] = None,
    region_strength: Annotated[Optional[float], typer.Option("--region-strength", help="0..1: how fully a box's own text replaces the whole prompt inside it (default 1).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow a size over 16x the model's native area (4x per side); slow and memory-hungry.")] = False,
    negative: Annotated[Optional[str], typer.Option("--negative", help="Negative prompt of every image (also for prompts read from stdin).")] = None,
    revision: Annotated[Optional[int], typer.Option("--revision", help="Generate from this revision of the bank instead of HEAD (see `cns log`).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images of one prompt per pipeline call (same per-image seeds; faster on a GPU).")] = 1,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="DDIM, PLMS, PNDM, Euler, 'Euler a', Heun, 'DPM++ 2M', 'DPM++ 2M Karras' or UniPC (default: the model's own).")] = None,
    grid: Annotated[bool, typer.Option("--grid", help="Also write a labelled contact sheet of the run (a row per prompt, a column per seed) and print its path last.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Do not draw an image whose file (same settings, same name) is already in --out; print its path as if drawn. Completes an interrupted run.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per image per line on stdout (with --grid, a last {\"grid\": PATH}).")] = False,
) -> None:
    """Generate images with any mix of the learned concepts (optionally each in its own region)."""
    from . import distributed
    from .generate import GenerateConfig, generate as run_generate
    from .prompts import read_prompts
    from .regions import RegionRequest

    def inputs():  # under a launcher the main process alone reads stdin, and shares what it read
        regions = RegionRequest.from_flags(region, layout, region_prompt, region_strength)
        config = GenerateConfig(n=n, seed=seed, steps=steps, guidance=guidance, width=width, height=height,
                                expand=expand, device=device.value, precision=precision.value, regions=regions,
                                force=force, negative=negative, revision=revision,
                                scheduler=scheduler, batch_size=batch_size)
        return config, read_prompts(prompts, sys.stdin)

    if distributed.launched():
        distributed.start(device.value)
    config, texts = distributed.on_main(inputs)
    from .reporting import sampling_progress_for_stderr

    show = output.emit_jsonl if json_ else (lambda rec: typer.echo(rec["path"]))
    records = run_generate(ctx.obj, texts, out, config, on_image=show, on_phase=output.info,  # phases: stderr
                           progress=sampling_progress_for_stderr(), skip_existing=skip_existing)
    if grid and records:
        from .grid import write_grid

        path = str(distributed.on_main(write_grid, records, n, out))
        if distributed.is_main():
            output.emit_jsonl({"grid": path}) if json_ else typer.echo(path)


@command()
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="kohya / diffusers LoRA, embedding, or a merged pipeline.")] = ExportFormat.kohya,
    concept: Annotated[Optional[list[str]], typer.Option("--concept", metavar="NAME", help="Only these concepts (repeatable).")] = None,
    merged: Annotated[bool, typer.Option("--merged", help="One LoRA file for all concepts (kohya, diffusers).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty OUT.")] = False,
    revision: Annotated[Optional[str], typer.Option("--revision", metavar="N", help="Export the state of revision N instead of HEAD (see `cns log`).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Export concepts for diffusers, ComfyUI, AUTOMATIC1111 or kohya (exact, not an approximation)."""
    from .export import export as run_export
    from .render import render_export

    doc = run_export(ctx.obj, out, format.value, concept, merged, force, revision=revision)
    output.emit_json(doc) if json_ else render_export(doc)


@command(bank=False)
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the photos, bank, images and contact sheet.")] = Path("cns-demo"),
    base: Annotated[str, typer.Option("--base", help="Base model (default: the bundled demo model).")] = "demo",
    steps: Annotated[int, typer.Option(help="Training steps per concept.")] = 150,
    device: Annotated[Device, typer.Option(help="Where to run.")] = Device.auto,
    json_: JsonOpt = False,
) -> None:
    """Offline quickstart: learn two concepts of the demo world, generate, forget one, score the images."""
    from .demo.run import DemoConfig, run_demo
    from .reporting import for_stderr

    from .reporting import sampling_progress_for_stderr

    doc = run_demo(out, DemoConfig(base=base, steps=steps, device=device.value), for_stderr(),
                   sampling_progress_for_stderr())
    if json_:
        output.emit_json(doc)
        return
    for name, s in doc["scores"].items():
        output.out_console().print(
            f"<{name}>  identity {s['identity_learned']:.3f} (base model, \"{s['base_class_prompt']}\": "
            f"{s['identity_base_class']:.3f})  scene {s['scene_accuracy']:.0%}  class {s['class_accuracy']:.0%}")
    output.out_console().print(f"forgetting {doc['concepts'][1]} left <{doc['concepts'][0]}> identical: "
                               f"{doc['forget_kept_other_identical']}")
    for key, how in (("together", "plain prompt"), ("together_regions", "--layout auto")):
        t = doc[key]
        output.out_console().print(f"both in one image, {how} (identity in the left / right half): " + ", ".join(
            f"<{n}> {v:.3f}" for n, v in t["identity"].items()) + f"; both in their halves in {t['in_order']:.0%}")
    typer.echo(doc["contact_sheet"])


@command(bank=False, distributed=True)
def bench(
    out: Annotated[Path, typer.Option(help="Folder for bench.json, table.md, forgetting.png, contact-sheet.png.")] = Path("cns-bench"),
    concepts: Annotated[Optional[int], typer.Option(help="Personal concepts learned one after another, 1-12 (default 10; --quick 2).")] = None,
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated methods (default: all): cns, cns-keep-general, cns-random, cns-dense, cns-no-reg, cns-lambda, kv-finetune, lora-seq, lora-merge, ti.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps per concept, every method (default 150; --quick 8).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="2 concepts, few steps and images: checks the pipeline, not the numbers.")] = False,
    lr_token: Annotated[Optional[float], typer.Option(help="Learning rate of every method's concept tokens (default: cns learn's).")] = None,
    vectors: Annotated[int, typer.Option(help="Vectors of every method's concept tokens, 1-16 (cns learn --vectors; textual inversion and the other baselines too).")] = 1,
    zero_shot_n: Annotated[Optional[int], typer.Option("--zero-shot-prompts", help="Held-out base captions scored after every concept (default 48).")] = None,
    base: Annotated[str, typer.Option("--base", help="Base model (default: the bundled demo model).")] = "demo",
    device: Annotated[Device, typer.Option(help="Where to run.")] = Device.auto,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out (same settings, any number of processes): the methods it finished are kept.")] = False,
    dist_timeout: Annotated[Optional[float], typer.Option("--dist-timeout", metavar="SECONDS", help="Under torchrun / accelerate launch: how long a process waits for the others, e.g. for the slowest method (default $CNS_DIST_TIMEOUT, else 24 h).", show_default=False)] = None,
    json_: JsonOpt = False,
) -> None:
    """Continual-personalization benchmark on the demo world: cns vs its ablations and the usual baselines."""
    from . import distributed
    from .bench.protocol import WAIT_S, BenchConfig, run_bench
    from .reporting import for_stderr

    def settings():  # under a launcher the main process checks them: a mistake is one line, from rank 0
        kw: dict = {"base": base, "device": device.value}
        if concepts is not None:  # given: it counts with --quick too
            kw["concepts"] = concepts
        if methods:
            kw["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
        if steps is not None:
            kw["steps"] = steps
        if lr_token is not None:
            kw["lr_token"] = lr_token
        kw["vectors"] = vectors
        if zero_shot_n is not None:
            kw["zero_shot_n"] = zero_shot_n
        return BenchConfig.quick(**kw) if quick else BenchConfig(**kw)

    distributed.check_timeout_flag(dist_timeout)  # a bad value is one line before anything starts
    if distributed.launched():
        distributed.start(device.value, timeout=dist_timeout, default=WAIT_S)
    config = distributed.on_main(settings)
    doc = run_bench(out, config, for_stderr(), resume=resume)
    if not distributed.is_main():  # rank 0 prints the run's results
        return
    if json_:
        output.emit_json(doc)
        return
    from .bench.report import table_markdown

    typer.echo(table_markdown(doc))
    for what, path in doc["files"].items():
        typer.echo(f"{what}: {path}")


def run() -> None:
    """The `cns` console script: the app, with Ctrl-C that works during long native operations, and a closed
    stdout handled even where no command runs (`cns --help | head -1`); a stdout closed from the start
    (`cns ... >&-`) is refused with one line, exit 2, before anything is written."""
    from . import interrupt

    if 1 in output.fill_closed_standard_fds():  # before any work: no result could be delivered (GNU tools fail alike)
        os.write(2, f"error: {output.STDOUT_CLOSED}\n".encode())
        sys.exit(2)
    interrupt.install()
    try:
        app()
    except BrokenPipeError:
        output.silence_stdout()
        sys.exit(output.BROKEN_PIPE_EXIT)


if __name__ == "__main__":  # python -m cns_cli.cli
    run()
