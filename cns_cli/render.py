"""Human-readable rendering of command results (tables on stdout). JSON output bypasses this module."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from .output import human_bytes, out_console

if TYPE_CHECKING:  # types only: importing verify would pull numpy into every `cns inspect` / `cns log`
    from .bank import Bank
    from .bank.verify import Report


_NUMERIC = re.compile(r"^[0-9][0-9,.]*( [KMG]?B)?$")


class _Table:
    """Aligned text columns with a header rule. Not rich.Table, on purpose: rich measures every cell
    (about 3 ms a row), which made `cns inspect` on a 100-concept bank spend 0.3 s just rendering."""

    def __init__(self, *columns: str, title: str | None = None):
        self.columns, self.title, self.rows = columns, title, []

    def add_row(self, *cells: str) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [max(len(r[i]) for r in [list(self.columns), *self.rows]) for i in range(len(self.columns))]
        numeric = [bool(self.rows) and all(_NUMERIC.match(r[i]) or not r[i] for r in self.rows)
                   for i in range(len(self.columns))]

        def line(cells) -> str:
            return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

        out = ["", self.title] if self.title else []
        out += [line(self.columns), "  ".join("─" * w for w in widths)]
        out += [line(r) for r in self.rows]
        return "\n".join(out) + "\n"


def _print(table: _Table) -> None:
    sys.stdout.write(table.render())
    sys.stdout.flush()


def _table(*columns: str, title: str | None = None) -> _Table:
    return _Table(*columns, title=title)


def render_inspect(doc: dict, neurons: bool) -> None:
    con = out_console()
    base = doc["base"]
    say = lambda text: con.print(text, markup=False, highlight=False)  # noqa: E731 - "[kind, ...]" is text, not markup
    say(f"bank      {doc['bank']}  (revision {doc['revision']}, format {doc['format_version']})")
    say(f"base      {base['location']}" + (f"@{base['revision']}" if base["revision"] else "")
              + f"  [{base['kind']}, fingerprint {base['fingerprint'][:12]}]")
    pred = ", v-prediction" if base.get("prediction_type") == "v_prediction" else ""
    widths = base.get("embedding_dims") or [base["text_dim"]]
    encoders = f" ({' + '.join(map(str, widths))} from {len(widths)} text encoders)" if len(widths) > 1 else ""
    say(f"family    {base.get('family_name', 'SD 1.x')}{pred}" + (f"  (configs: {base['config']})" if base.get("config") else ""))
    say(f"K/V       {base['kv_layers']} layers, {base['kv_rows']:,} neurons, text width {base['text_dim']}{encoders}")
    cap = doc["capacity"]
    say(f"capacity  {cap['columns_left']} of {cap['basis_columns']} basis columns free")
    if doc.get("damage"):
        from .output import warn
        from rich.markup import escape

        warn(escape(doc["damage"]))
    if not doc["concepts"]:
        con.print("concepts  none yet — teach one with `cns learn NAME ./photos`")
        return
    t = _table("concept", "token", "vectors", "class", "neurons", "layers", "slice", "params", "stored", "rev")
    for c in doc["concepts"]:
        s = c["slice"]
        vectors = "?" if c["vectors"] is None else str(c["vectors"])  # ?: a damaged embedding object
        t.add_row(c["name"], c["token"], vectors, c["class_word"], f"{c['neurons']:,}", str(c["layers"]),
                  f"own ({s['rank']})" if s["start"] is None else f"{s['start']}:{s['start'] + s['rank']}",
                  f"{c['parameters']['total']:,}", human_bytes(c["bytes"]),
                  str(c["learned_in"]))
    tot = doc["totals"]
    t.add_row("total", "", "", "", f"{tot['neurons']:,}", "", "", "", human_bytes(tot["bytes"]), "")
    _print(t)
    if neurons:
        for c in doc["concepts"]:
            if "largest_coefficient" in c["stats"]:
                say(f"{c['name']}: {attained_text(c['stats'])}")
            lt = _table("layer", "neurons", "of", "shared with", title=f"{c['name']}: neurons per layer")
            for row in c["per_layer"]:
                shared = ", ".join(f"{o} {k}" for o, k in row["overlap"].items()) or "-"
                lt.add_row(row["layer"], str(row["neurons"]), str(row["of"]), shared)
            _print(lt)


def _describe(op: dict) -> str:
    if op["kind"] == "undo":
        return f"undo revision {op['undone']} (back to the state of {op['restores']})"
    if op["kind"] == "restore":
        return f"restore the state of revision {op['restores']}"
    return f"{op['kind']} {op['concept']}" if op.get("concept") else op["kind"]


def log_entries(bank: Bank) -> list[dict]:
    """HEAD's history, newest first, as JSON-ready entries. A revision file of the chain that is missing or invalid
    is an entry with `missing` (why) and nulls, and the list goes on below it (Bank.history_with_gaps); each
    entry's `damaged` lists its objects that are missing or of the wrong size (a stat each, no hashing: `cns
    verify` does the full check)."""
    from .bank.store import LostRevision

    seen: dict[str, str | None] = {}  # object path -> quick problem, each file looked at once

    def damaged(rev) -> list[dict]:
        for ref in rev.objects():
            if ref.path not in seen:
                seen[ref.path] = bank.object_quick_problem(ref)
        return [{"where": ref.path, "problem": seen[ref.path]} for ref in rev.objects() if seen[ref.path]]

    entries = []
    for r in bank.history_with_gaps():
        if isinstance(r, LostRevision):
            entries.append({"revision": r.number, "missing": r.why, "parent": None, "created": None, "writer": None,
                            "operation": None, "concepts": None, "damaged": []})
        else:
            entries.append({"revision": r.number, "missing": None, "parent": r.parent, "created": r.created,
                            "writer": r.writer, "operation": r.operation.model_dump(mode="json"),
                            "concepts": sorted(r.concepts), "damaged": damaged(r)})
    return entries


def _names(names: list[str], most: int = 4) -> str:
    if not names:
        return "-"
    shown = ", ".join(names[:most])
    return f"{shown}, … ({len(names)} in all)" if len(names) > most else shown


def render_log(entries: list[dict]) -> None:
    t = _table("rev", "time (UTC)", "operation", "concepts after")
    for e in entries:
        if e["missing"]:
            t.add_row(str(e["revision"]), "?", "MISSING (its file is lost or invalid)", "?")
            continue
        flag = f"  [DAMAGED: {len(e['damaged'])} file(s)]" if e["damaged"] else ""
        t.add_row(str(e["revision"]), e["created"][:19].replace("T", " "), _describe(e["operation"]) + flag,
                  _names(e["concepts"]))
    _print(t)
    warn_log_damage(entries)


def warn_log_damage(entries: list[dict]) -> None:
    """One warning line on stderr when the history shown is not whole: lost revisions, damaged files."""
    from .output import warn

    lost = [e["revision"] for e in entries if e["missing"]]
    damaged = [e["revision"] for e in entries if e["damaged"]]
    parts = []
    if lost:
        parts.append(f"revision{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} "
                     f"{'are' if len(lost) > 1 else 'is'} missing or invalid (the revisions below "
                     f"{'them' if len(lost) > 1 else 'it'} are the valid files before {'them' if len(lost) > 1 else 'it'})")
    if damaged:
        parts.append(f"revision{'s' if len(damaged) > 1 else ''} {', '.join(map(str, damaged))} "
                     f"{'have' if len(damaged) > 1 else 'has'} missing or damaged files")
    if parts:
        warn("; ".join(parts) + "; `cns verify` lists every problem")


def render_verify(report: Report) -> None:
    con = out_console()
    for p in report.problems:
        con.print(f"[red]problem[/red] {p['where']}: {p['problem']}", markup=True)
    for w in report.warnings:
        con.print(f"[yellow]warning[/yellow] {w['where']}: {w['warning']}", markup=True)
    for n in report.notes:
        con.print(f"note    {n['where']}: {n['note']}")
    if report.problems:
        status = f"{len(report.problems)} problem(s)"
    elif report.warnings:
        status = (f"{'FAILED (--strict)' if report.strict else 'ok'}: HEAD is healthy; {len(report.warnings)} "
                  "warning(s) about older revisions, whose states undo and restore cannot bring back")
    else:
        status = "ok"
    head = f"HEAD {report.head}" if report.head is not None else "HEAD damaged"
    con.print(f"{status}: {report.revisions_checked} revisions, {report.objects_checked} objects checked ({head})")


def render_learn(doc: dict) -> None:
    con = out_console()
    plan = doc["plan"]
    layers = plan["neurons_per_layer"]
    con.print(f"{'plan for' if doc['dry_run'] else 'learned'} {plan['token']} ({plan['class_word']}) from "
              f"{len(plan['images'])} image(s)" + (f", {len(plan['skipped'])} skipped" if plan["skipped"] else ""))
    con.print(f"  neurons      {plan['neurons']:,} in {len(layers)} layers (budget {plan['budget_rows']:,}, "
              f"{plan['general_neurons']:,} general neurons excluded)")
    p = plan["parameters_trained"]
    vectors = f" in {plan['vectors']} vectors" if plan["vectors"] > 1 else ""  # a multi-vector token
    con.print(f"  trained      {p['total']:,} parameters ({p['coefficients']:,} neuron coefficients + {p['token']:,} token"
              f"{vectors}); slice {_slice_text(plan['slice'])}")
    con.print(f"  stored       {human_bytes(plan['bytes_to_store'])}")
    if "protection" in plan:
        _render_protection(con, plan["protection"])
    if doc["dry_run"]:
        t = _table("layer", "neurons")
        for layer, k in layers.items():
            t.add_row(layer, str(k))
        _print(t)
        con.print("dry run: nothing was written")
        return
    s = doc["stats"]
    con.print(f"  loss         {s['first_tenth_loss']:.4f} -> {s['final_loss']:.4f} (means of the first and last tenth of "
              f"{s['steps_run']} steps; {s['seconds_per_step'] * 1000:.0f} ms/step, {s['seconds']:.1f} s in all)")
    if "largest_coefficient" in s:
        con.print("  attained     " + attained_text(s))
    con.print(f"revision {doc['revision']}: try `cns generate \"{plan['token']} on a beach\"`")


def _slice_text(sl: dict) -> str:
    if sl["start"] is None:
        return f"own (rank {sl['rank']}, chosen from the concept's states after the token's warm-up)"
    return f"{sl['start']}:{sl['start'] + sl['rank']} of the bank's basis"


def _render_protection(con, p: dict) -> None:
    """What decides whether the rows can move (learning/protection.py): the budget, the slice's selectivity and,
    per protected set, the eigenvalues of G = BᵀMB and the layers' output energy E_l."""
    budget = "off" if p["max_drift"] is None else f"{p['max_drift']:g} (RMS relative change ≤ {p['max_drift'] ** 0.5:.1%})"
    penalty = f"; penalty λ {p['reg_lambda']:g}" if p.get("reg_lambda") else ""
    k = p["selectivity"]
    con.print(f"  protection   max drift {budget}{penalty}", markup=False)
    estimate = " (estimated before the warm-up)" if p.get("slice") == "concept" else ""
    con.print(f"  selectivity  κ {k['slice']:.3g} for the slice{estimate} (a slice blind to the concept: ≈ {k['rank']}; the best "
              f"any slice of the text width could reach: {k['best']:.3g})", markup=False)
    t = _table("protected set", "eigenvalues of BᵀMB", "E_l min / median / max")
    for g, v in p["sets"].items():
        t.add_row(g, " ".join(f"{e:.3g}" for e in v["gram_eigenvalues"]),
                  f"{v['energy_min']:.3g} / {v['energy_median']:.3g} / {v['energy_max']:.3g}")
    _print(t)


def attained_text(stats: dict) -> str:
    """One line of what a learned concept's rows did (its recorded stats)."""
    drift = {k[len("drift_"):]: v for k, v in stats.items() if k.startswith("drift_") and v is not None}
    worst = max(drift, key=drift.get) if drift else None
    text = f"largest coefficient {stats['largest_coefficient']:.3g}"
    if worst:
        text += f", drift {drift[worst]:.3g} ({worst}, the largest of {len(drift)} protected sets)"
    if stats.get("selectivity") is not None:
        text += f", selectivity κ {stats['selectivity']:.3g}"
    return text


def render_export(doc: dict) -> None:
    con = out_console()
    for f in doc["files"]:
        if f["kind"] != "pipeline":
            con.print(f"{f['path']}  ({f['kind']}, {', '.join(f['concepts'])}, {human_bytes(f['bytes'])})")
    if doc["format"] == "pipeline":
        total = sum(f["bytes"] for f in doc["files"])
        con.print(f"{doc['out']}  (diffusers pipeline with {', '.join(doc['concepts'])}, {human_bytes(total)})")
    tokens = ", ".join(doc["tokens"].values())
    con.print(f"exported revision {doc['revision']} as {doc['format']}; prompt tokens: {tokens}")
