"""How click's parts of `cns` look: its usage errors and the names of arguments in help.

typer prints a usage error in four lines (usage, "Try ...", a blank line, "Error: ...", with pydantic's wording
for a value it could not convert) and writes arguments as `{REV}` and `REV <str>`. The README promises one line
`error: ...` and exit 2 for every bad input, so `CnsGroup` turns each click UsageError into that line in one place,
and `CnsCommand` names arguments as click itself does (REV, PROMPTS...).
"""

from __future__ import annotations

import contextlib
import importlib
import re

import typer
import typer.core

from . import distributed, output

# click's exceptions, wherever this typer takes click from (typer 0.2x carries its own copy as typer._click)
click_errors = importlib.import_module(typer.BadParameter.__module__)


class CnsCommand(typer.core.TyperCommand):
    """A command whose help names its arguments as click does: `REV`, `PROMPTS...`, `[NAME]` (typer writes `{REV}` in
    the usage line and `REV <str>`, `prompts... <list[str]>` in the Arguments list)."""

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_name(p, usage=True) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx, formatter):
        super().format_options(ctx, _ArgumentNames(formatter, self, ctx))


class _ArgumentNames:
    """A help formatter that writes each argument's row under its readable name (the rest passes through)."""

    def __init__(self, formatter, command, ctx):
        self._formatter, self._names = formatter, {}
        for p in command.get_params(ctx):
            if p.param_type_name == "argument" and (record := p.get_help_record(ctx)):
                self._names[record[0]] = _argument_name(p, usage=False)

    def write_dl(self, rows, *args, **kwargs):
        return self._formatter.write_dl([(self._names.get(name, name), text) for name, text in rows], *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._formatter, name)


def _argument_name(param, usage: bool) -> str:
    """REV, PROMPTS... (several values), and [REV] in the usage line when it is optional."""
    name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
    return f"[{name}]" if usage and not param.required else name


class CnsGroup(typer.core.TyperGroup):
    """The `cns` group: every click usage error (an unknown option, a value of the wrong type, a missing argument) is
    one line `error: ...` naming the flag and `cns CMD --help`, exit 2, as the README promises for every bad input
    (click prints four lines, with pydantic's wording for values). `cns` alone still prints the help."""

    def make_context(self, *args, **kwargs):
        with _usage_errors_on_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):  # parses the command's own arguments
        with _usage_errors_on_one_line():
            return super().invoke(ctx)


@contextlib.contextmanager
def _usage_errors_on_one_line():
    try:
        yield
    except getattr(click_errors, "NoArgsIsHelpError", ()):  # `cns` alone: click (8.2 on) shows the help
        raise
    except click_errors.UsageError as e:
        if distributed.is_main():  # every rank of a launched run parses the same argv: say it once
            output.error(_usage_message(e))
        raise typer.Exit(2) from None


# pydantic's error types for a value typer could not convert -> what the flag expects
_EXPECTED = {"int_parsing": "a whole number", "int_from_float": "a whole number", "float_parsing": "a number",
             "bool_parsing": "true or false"}


def _usage_message(e) -> str:
    """One line: what was wrong, then where to read the usage."""
    where = f"see `{e.ctx.command_path} --help`" if e.ctx else "see `cns --help`"
    if isinstance(e, click_errors.BadParameter) and e.param is not None and _pydantic_error(e):
        kind, value = _pydantic_error(e)
        flag = _param_name(e.param)
        what = (f"{flag} expects {_EXPECTED[kind]}, got {value!r}" if kind in _EXPECTED
                else f"{flag}: {e.message.removeprefix('Value error, ')}")  # a choice: "'gpu' is not one of ..."
    elif isinstance(e, click_errors.MissingParameter) and e.param is not None:
        what = f"missing {_param_name(e.param)}"
    elif isinstance(e, click_errors.NoSuchOption) and re.fullmatch(r"-[0-9]+", e.option_name):
        what = (f"{e.option_name} is not an option, and no argument of cns is a negative number "
                "(revisions count from 0: see `cns log`)")
    else:
        what = e.format_message()
    what = what.rstrip(".")
    if what[1:2].islower():  # "Invalid value" -> "invalid value", but not a metavar: "OUT: ..." stays
        what = what[:1].lower() + what[1:]
    return " ".join(f"{what}; {where}".split())  # one line whatever click's message held


def _param_name(param) -> str:
    """How the user wrote (or should write) a parameter: its longest flag, or an argument's name (REV)."""
    return max(param.opts, key=len) if param.param_type_name == "option" else _argument_name(param, usage=False)


def _pydantic_error(e) -> tuple[str, object] | None:
    """(pydantic error type, the value given) when typer's conversion raised `e`, else None."""
    errors = getattr(e.__cause__, "errors", None)
    if not callable(errors) or not errors():
        return None
    first = errors()[0]
    return first.get("type", ""), first.get("input")
