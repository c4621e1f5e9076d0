"""The one place output happens: results on stdout (human text or exactly one JSON document), everything
else (progress, warnings, errors) on stderr through rich."""

from __future__ import annotations

import json
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


@lru_cache(maxsize=1)
def out_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def emit_json(doc) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def emit_jsonl(doc) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def info(msg: str) -> None:
    err_console().print(msg)


def warn(msg: str) -> None:
    err_console().print(f"[yellow]warning:[/yellow] {msg}")


def error(msg: str) -> None:
    from rich.markup import escape

    err_console().print(f"[bold red]error:[/bold red] {escape(msg)}")


def human_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}"
