"""`cns bench` outputs besides bench.json: the table (markdown, for docs/benchmark.md), the forgetting-curve plot and a
contact sheet of every method on the same prompts and seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLUMNS = [  # (header, summary key, format)
    ("final identity", "final_identity", "{:.3f}"),
    ("just after", "identity_just_after", "{:.3f}"),
    ("recognised", "final_recognised", "{:.0%}"),
    ("forgetting", "mean_forgetting", "{:+.3f}"),
    ("zero-shot Δ (pts)", "zero_shot_change_points", "{:+.1f}"),
    ("scene align", "scene_alignment", "{:.0%}"),
    ("pairs: both", "pairs_both_recognised", "{:.0%}"),
    ("pairs: 2 classes", "pairs_both_classes", "{:.0%}"),
    ("regions: both", "regional_pairs_shown", "{:.0%}"),
    ("regions: in order", "regional_pairs_in_order", "{:.0%}"),
    ("regions: box identity ÷ alone", "regional_pairs_box_identity", "{:.0%}"),
    ("regions: all 3", "regional_triples_shown", "{:.0%}"),
    ("regions: scene", "regional_pairs_scene", "{:.0%}"),
    ("params trained", "params_trained_per_concept", "{:,.0f}"),
    ("weights changed", "weights_changed_per_concept", "{:,.0f}"),
    ("bytes / concept", "bytes_per_concept", "{:,.0f}"),
    ("learn s", "learn_seconds_per_concept", "{:.1f}"),
]


def table_markdown(doc: dict) -> str:
    """One row per method, its summary numbers (per concept where it says so)."""
    head = "| method | " + " | ".join(h for h, _, _ in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for key, m in doc["methods"].items():
        cells = []
        for _, k, fmt in COLUMNS:
            v = m["summary"].get(k)
            cells.append("–" if v is None else fmt.format(v))
        rows.append(f"| `{key}` {m['label']} | " + " | ".join(cells) + " |")
    base = doc["base"]["zero_shot"]
    rows.append("")
    rows.append(f"Base model zero-shot accuracy (held-out captions, mean of scene/class/colour): {base['accuracy']:.3f}. "
                f"Base model drawing each concept's plain description: identity "
                f"{np.mean(list(doc['base']['identity_base_class'].values())):.3f}.")
    return "\n".join(rows) + "\n"


def write_reports(out: Path, doc: dict, images: dict, concepts: list) -> dict:
    (out / "table.md").write_text(table_markdown(doc))
    return {"json": str(out / "bench.json"), "table": str(out / "table.md"),
            "plot": str(plot_forgetting(out / "forgetting.png", doc)),
            "contact_sheet": str(contact_sheet(out / "contact-sheet.png", doc, images, concepts))}


def curves(entry: dict) -> dict[str, list[float]]:
    """Identity of each concept after 0, 1, 2, ... more concepts were learned."""
    out: dict[str, list[float]] = {}
    for st in entry["steps"]:
        for name, sc in st["concepts"].items():
            out.setdefault(name, []).append(sc["identity"])
    return out


def plot_forgetting(path: Path, doc: dict) -> Path:
    """A panel per method: thin line per concept, thick mean, identity vs concepts learned since."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = list(doc["methods"])
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), sharex=True, sharey=True, squeeze=False)
    floor = float(np.mean(list(doc["base"]["identity_base_class"].values())))
    for ax, key in zip(axes.flat, keys):
        cv = curves(doc["methods"][key])
        longest = max(len(v) for v in cv.values())
        for v in cv.values():
            ax.plot(range(len(v)), v, color="tab:blue", alpha=0.3, linewidth=1)
        mean = [np.mean([v[i] for v in cv.values() if len(v) > i]) for i in range(longest)]
        ax.plot(range(longest), mean, color="tab:blue", linewidth=2.5, label="mean")
        ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label="base, plain description")
        ax.set_title(key, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("concepts learned since")
    for ax in axes[:, 0]:
        ax.set_ylabel("identity similarity")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Forgetting curves (demo world, identity of each concept as more are learned)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


GROUPS = ("pairs", "regional_pairs", "regional_triples")


def sheet_subset(images: dict, concepts: list) -> dict:
    """What `contact_sheet` draws of one method's images ({"concepts": {name: uint8 (n, h, w, 3)}, group key:
    uint8 (n, h, w, 3)}): the first concept's, the last concept's first and each group's first. The bench keeps
    only these (in memory and in OUT/images/), not every scored image."""
    first, last = concepts[0].name, concepts[-1].name
    kept = {last: images["concepts"][last][:1], first: images["concepts"][first]}  # first wins when they are one
    return {"concepts": kept, **{k: images[k][:1] for k in GROUPS}}


def contact_sheet(path: Path, doc: dict, images: dict, concepts: list) -> Path:
    """Rows: reference photo, then one row per method with its final model: the first concept (the one most
    at risk) on every evaluation scene, the last concept, the first pair prompt without and with regions, and the
    first three-concept prompt with regions."""
    from PIL import Image

    from ..sheet import labelled_sheet

    first, last = concepts[0].name, concepts[-1].name
    rows = [("photos", [np.asarray(Image.open(p).convert("RGB")) for c in (concepts[0], concepts[-1])
                        for p in sorted(c.photos.glob("*.png"))[:2]])]
    for key in doc["methods"]:
        got = images[key]
        tiles = list(got["concepts"][first])
        if last != first:
            tiles += list(got["concepts"][last][:1])
        tiles += [image for k in GROUPS for image in got[k][:1]]
        rows.append((key, tiles))
    title = f"<{first}> on each scene | <{last}> | first pair: plain, regions | first triple: regions - same seeds"
    return labelled_sheet(path, rows, tile=96, label_w=130, title=title)
