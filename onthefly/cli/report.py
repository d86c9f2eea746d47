"""``onthefly report``: the per-sample loss distribution of one pass, as text, HTML or PNG.

The numbers come from :func:`onthefly.store.read.reports.report` (the epoch
summary and the hardest samples); the functions here only lay them out. The
HTML page is self-contained: the histogram is inline SVG drawn from the
summary's bin edges and counts, with no script and no external file.
"""

from __future__ import annotations

import argparse
import html
import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from onthefly.cli.tables import render_table
from onthefly.errors import ConfigError
from onthefly.store.read.query import sql as open_sql
from onthefly.store.read.reports import report

__all__ = ["add_report", "run_report", "report_text", "report_html", "histogram_svg", "ascii_histogram", "merge_bins"]

OUTPUT_SUFFIXES = (".html", ".png")
BAR_WIDTH = 40
TEXT_BINS = 20
_NUMBER = "{:.4g}"


def add_report(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare ``onthefly report``."""
    parser = commands.add_parser(
        "report",
        parents=[common],
        help="the per-sample loss distribution of one pass",
        description=(
            "Summarize the per-sample losses of one pass over a split: count, mean, quantiles, a "
            "histogram and the hardest samples. Prints text; with -o report.html writes a self-contained "
            "page (inline SVG), with -o report.png a picture (needs matplotlib)."
        ),
    )
    parser.add_argument("session", nargs="?", help="session id, folder or .zip bundle (default: the newest)")
    parser.add_argument("--run", help="run id or name (default: the newest run)")
    parser.add_argument("--epoch", type=int, help="epoch (default: the latest summarized one)")
    parser.add_argument("--split", default="train", help="train, val or test (default: train)")
    parser.add_argument("-k", type=int, default=10, metavar="K", help="hardest samples to list (default 10)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write report.html or report.png as well")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace, out: TextIO) -> int:
    suffix = Path(args.output).suffix.lower() if args.output else None
    if suffix is not None and suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"-o {args.output}: a report is written as .html or .png; pass e.g. -o report.html")
    if suffix == ".png":
        _require_matplotlib(args.output)
    con = open_sql(args.session, home=args.home)
    try:
        result = report(con, run=args.run, split=args.split, epoch=args.epoch, k=args.k)
        session = con.execute("SELECT id, project FROM sessions").fetchone()
    finally:
        con.close()
    title = f"{session[1]} · session {session[0]}" if session else "OnTheFly report"
    out.write(report_text(result, title=title))
    if suffix == ".html":
        _write_text(Path(args.output), report_html(result, title=title))
    elif suffix == ".png":
        _write_png(result, Path(args.output), title=title)
    if args.output:
        out.write(f"wrote {Path(args.output).resolve()}\n")
    return 0


# -- text -----------------------------------------------------------------------


def _num(value: Any) -> str:
    return "n/a" if value is None else _NUMBER.format(value)


def merge_bins(edges: Sequence[float], counts: Sequence[int], *, max_bins: int) -> tuple[list[float], list[int]]:
    """Merge neighbouring bins so at most ``max_bins`` remain (groups of equal size, the last may be smaller).

    Example:
        >>> merge_bins([0, 1, 2, 3, 4], [1, 2, 3, 4], max_bins=2)
        ([0, 2, 4], [3, 7])
    """
    if len(counts) <= max_bins:
        return list(edges), list(counts)
    group = math.ceil(len(counts) / max_bins)
    starts = range(0, len(counts), group)
    merged_edges = [edges[i] for i in starts] + [edges[-1]]
    return merged_edges, [sum(counts[i : i + group]) for i in starts]


def ascii_histogram(
    edges: Sequence[float], counts: Sequence[int], *, width: int = BAR_WIDTH, max_bins: int = TEXT_BINS
) -> list[str]:
    """One line per bin: the range, a bar of ``#`` scaled to the largest bin, the count.

    Neighbouring bins are merged down to ``max_bins`` lines.

    Example:
        >>> ascii_histogram([0.0, 1.0, 2.0], [4, 2], width=4)
        ['      0 –       1 | #### 4', '      1 –       2 | ##   2']
    """
    if not counts:
        return ["(no histogram: the pass has no finite loss)"]
    edges, counts = merge_bins(edges, counts, max_bins=max_bins)
    peak = max(max(counts), 1)
    count_width = len(str(max(counts)))
    lines = []
    for i, count in enumerate(counts):
        bar = "#" * round(width * count / peak)
        lines.append(f"{_num(edges[i]):>7} – {_num(edges[i + 1]):>7} | {bar.ljust(width)} {count:>{count_width}}")
    return lines


def report_text(result: dict[str, Any], *, title: str = "", width: int = BAR_WIDTH) -> str:
    """A report as plain text: header, summary, quantiles, histogram, hardest samples."""
    q = result["quantiles"]
    lines = [
        title,
        f"run {result['run']} · {result['split']} · epoch {result['epoch']} · step {result['step']}",
        f"count {result['count']} · mean {_num(result['mean'])}",
        "quantiles  " + "  ".join(f"{name} {_num(q.get(name))}" for name in ("p10", "p50", "p90", "p99")),
        "",
        "per-sample loss histogram",
        *ascii_histogram(result["hist"]["edges"], result["hist"]["counts"], width=width),
        "",
    ]
    hardest = result["hardest"]
    if hardest:
        lines.append("hardest samples")
        rows = [[h["sample_id"], h["loss"], h.get("label"), h.get("pred")] for h in hardest]
        lines.append(render_table(["sample_id", "loss", "label", "pred"], rows).rstrip("\n"))
    return "\n".join(line for line in lines if line is not None).lstrip("\n") + "\n"


# -- HTML -------------------------------------------------------------------------


def histogram_svg(edges: Sequence[float], counts: Sequence[int], *, width: int = 640, height: int = 240) -> str:
    """An inline SVG bar chart of a histogram, with axis labels; no script.

    Example:
        >>> histogram_svg([0.0, 1.0], [3]).startswith("<svg")
        True
    """
    margin_left, margin_bottom, margin_top = 48, 28, 8
    plot_w, plot_h = width - margin_left - 8, height - margin_bottom - margin_top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="per-sample loss histogram">'
    ]
    if not counts:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no finite loss</text></svg>')
        return "".join(parts)
    peak = max(max(counts), 1)
    bar_w = plot_w / len(counts)
    for i, count in enumerate(counts):
        h = plot_h * count / peak
        x = margin_left + i * bar_w
        y = margin_top + plot_h - h
        tip = html.escape(f"{_num(edges[i])} – {_num(edges[i + 1])}: {count}")
        parts.append(
            f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(bar_w - 1, 0.5):.2f}" height="{h:.2f}" fill="#4477aa">'
            f"<title>{tip}</title></rect>"
        )
    axis_y = margin_top + plot_h
    parts.append(f'<line x1="{margin_left}" y1="{axis_y}" x2="{width - 8}" y2="{axis_y}" stroke="#333"/>')
    parts.append(f'<line x1="{margin_left}" y1="{margin_top}" x2="{margin_left}" y2="{axis_y}" stroke="#333"/>')
    for x, label, anchor in (
        (margin_left, _num(edges[0]), "start"),
        (width - 8, _num(edges[-1]), "end"),
    ):
        parts.append(
            f'<text x="{x}" y="{height - 8}" font-size="12" text-anchor="{anchor}">{html.escape(label)}</text>'
        )
    parts.append(f'<text x="{margin_left - 4}" y="{margin_top + 12}" font-size="12" text-anchor="end">{peak}</text>')
    parts.append(f'<text x="{margin_left - 4}" y="{axis_y}" font-size="12" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)


def report_html(result: dict[str, Any], *, title: str = "OnTheFly report") -> str:
    """A report as one self-contained HTML page (inline CSS and SVG, no script)."""
    esc = html.escape
    q = result["quantiles"]
    summary = [
        ("run", result["run"]),
        ("split", result["split"]),
        ("epoch", result["epoch"]),
        ("step", result["step"]),
        ("count", result["count"]),
        ("mean", _num(result["mean"])),
        *((name, _num(q.get(name))) for name in ("p10", "p50", "p90", "p99")),
    ]
    summary_rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in summary)
    columns = ("sample_id", "loss", "label", "pred")
    hardest_rows = "".join(
        "<tr>" + "".join(f"<td>{esc(_cell(h.get(key)))}</td>" for key in columns) + "</tr>" for h in result["hardest"]
    )
    svg = histogram_svg(result["hist"]["edges"], result["hist"]["counts"])
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{padding:2px 10px;text-align:right}"
        "th{text-align:left;color:#555}thead th{border-bottom:1px solid #999}"
        "</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f"<h2>Per-sample loss · {esc(str(result['split']))} · epoch {esc(str(result['epoch']))}</h2>"
        f"<table>{summary_rows}</table>{svg}"
        "<h2>Hardest samples</h2><table><thead><tr><th>sample_id</th><th>loss</th><th>label</th><th>pred</th>"
        f"</tr></thead><tbody>{hardest_rows}</tbody></table>"
        "</body></html>\n"
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _num(value) if math.isfinite(value) else str(value)
    return str(value)


# -- files ------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    if not path.parent.is_dir():
        raise ConfigError(f"the folder of {path} does not exist: create it or pass another path")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _require_matplotlib(output: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"-o {output} needs matplotlib, which is not installed: `pip install matplotlib`, or write "
            f"-o {Path(output).with_suffix('.html').name} (a self-contained page, no extra package)"
        ) from None


def _write_png(result: dict[str, Any], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, counts = result["hist"]["edges"], result["hist"]["counts"]
    fig, ax = plt.subplots(figsize=(8, 4))
    try:
        if counts:
            widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
            ax.bar(edges[:-1], counts, width=widths, align="edge", color="#4477aa")
        ax.set_xlabel("per-sample loss")
        ax.set_ylabel("samples")
        ax.set_title(f"{title}\n{result['split']} · epoch {result['epoch']} · mean {_num(result['mean'])}")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
