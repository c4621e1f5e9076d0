"""Human-readable rendering of command results (tables on stdout). JSON output bypasses this module."""

from __future__ import annotations

from .bank import Bank
from .bank.verify import Report
from .output import human_bytes, out_console


def _table(*columns: str, title: str | None = None):
    from rich import box
    from rich.table import Table

    t = Table(*columns, title=title, box=box.SIMPLE_HEAD, title_justify="left")
    return t


def render_inspect(doc: dict, neurons: bool) -> None:
    con = out_console()
    base = doc["base"]
    con.print(f"bank      {doc['bank']}  (revision {doc['revision']}, format {doc['format_version']})")
    con.print(f"base      {base['location']}" + (f"@{base['revision']}" if base["revision"] else "")
              + f"  [{base['kind']}, fingerprint {base['fingerprint'][:12]}]")
    con.print(f"K/V       {base['kv_layers']} layers, {base['kv_rows']:,} neurons, text width {base['text_dim']}")
    cap = doc["capacity"]
    con.print(f"capacity  {cap['columns_left']} of {cap['basis_columns']} basis columns free")
    if not doc["concepts"]:
        con.print("concepts  none yet — teach one with `cns learn NAME ./photos`")
        return
    t = _table("concept", "token", "class", "neurons", "layers", "slice", "params", "stored", "rev")
    for c in doc["concepts"]:
        s = c["slice"]
        t.add_row(c["name"], c["token"], c["class_word"], f"{c['neurons']:,}", str(c["layers"]),
                  f"{s['start']}:{s['start'] + s['rank']}", f"{c['parameters']:,}", human_bytes(c["bytes"]),
                  str(c["learned_in"]))
    tot = doc["totals"]
    t.add_row("total", "", "", f"{tot['neurons']:,}", "", "", "", human_bytes(tot["bytes"]), "", style="bold")
    con.print(t)
    if neurons:
        for c in doc["concepts"]:
            lt = _table("layer", "neurons", "of", "shared with", title=f"{c['name']}: neurons per layer")
            for row in c["per_layer"]:
                shared = ", ".join(f"{o} {k}" for o, k in row["overlap"].items()) or "-"
                lt.add_row(row["layer"], str(row["neurons"]), str(row["of"]), shared)
            con.print(lt)


def _describe(op: dict) -> str:
    if op["kind"] == "undo":
        return f"undo revision {op['undone']} (back to the state of {op['restores']})"
    return f"{op['kind']} {op['concept']}" if op.get("concept") else op["kind"]


def log_entries(bank: Bank) -> list[dict]:
    return [
        {"revision": r.number, "parent": r.parent, "created": r.created, "writer": r.writer,
         "operation": r.operation.model_dump(mode="json"), "concepts": sorted(r.concepts)}
        for r in bank.history()
    ]


def render_log(entries: list[dict]) -> None:
    t = _table("rev", "time (UTC)", "operation", "concepts after")
    for e in entries:
        t.add_row(str(e["revision"]), e["created"][:19].replace("T", " "), _describe(e["operation"]),
                  ", ".join(e["concepts"]) or "-")
    out_console().print(t)


def render_verify(report: Report) -> None:
    con = out_console()
    for p in report.problems:
        con.print(f"[red]problem[/red] {p['where']}: {p['problem']}", markup=True)
    for n in report.notes:
        con.print(f"note    {n['where']}: {n['note']}")
    status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    con.print(f"{status}: {report.revisions_checked} revisions, {report.objects_checked} objects checked (HEAD {report.head})")
