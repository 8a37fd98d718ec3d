"""The sweep's plot (accuracy against p99, Pareto front marked) and one-page HTML report."""

from __future__ import annotations

import html
from pathlib import Path

MARKERS = {"openvino": "o", "onnxruntime": "s", "tensorrt": "^", "pytorch": "x"}


def _measured(doc: dict) -> list[dict]:
    return [r for r in doc["candidates"] if r["status"] == "ok" and "p99_ms" in r]


def write_plot(doc: dict, path: Path) -> Path:
    """Accuracy (%) against p99 latency (ms, log scale); the Pareto front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _measured(doc)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    models = sorted({r["run"] for r in rows})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    for r in rows:
        ax.scatter(r["p99_ms"], 100 * r["accuracy"], marker=MARKERS.get(r["backend"], "o"),
                   color=colours[r["run"]], s=20 + 12 * r["threads"], alpha=0.85,
                   facecolors="none" if r["precision"] == "fp32" else colours[r["run"]])
    front = [r for key in doc["pareto_front"] for r in rows if r["key"] == key]
    if front:
        ax.plot([r["p99_ms"] for r in front], [100 * r["accuracy"] for r in front], "k--", lw=1, label="Pareto front")
    for m in models:
        ax.scatter([], [], color=colours[m], label=Path(m).name)
    for backend, marker in MARKERS.items():
        if any(r["backend"] == backend for r in rows):
            ax.scatter([], [], marker=marker, color="grey", label=backend)
    ax.set_xscale("log")
    ax.set_xlabel("p99 latency per call (ms, log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("accuracy against latency (filled: int8, hollow: fp32; larger: more threads)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if rows:  # nothing measured: an empty plot, without a legend of nothing
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _cell(value, fmt: str = "{}") -> str:
    return "" if value is None else html.escape(fmt.format(value))


def write_report(doc: dict, path: Path, plot: str | None = None) -> Path:
    """One page: device, definitions, the plot, every candidate (front rows in bold)."""
    front = set(doc["pareto_front"])
    snrs = list(next((r["accuracy_by_snr"] for r in doc["candidates"] if "accuracy_by_snr" in r), {}))
    head = ("<tr><th>model</th><th>backend</th><th>precision</th><th>calibration</th><th>threads</th><th>batch</th>"
            "<th>accuracy %</th>" + "".join(f"<th>{html.escape(s)} %</th>" for s in snrs)
            + "<th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>peak RSS MB</th><th>model KB</th><th>status</th></tr>")
    body = []
    for r in sorted(doc["candidates"], key=lambda r: (-(r.get("accuracy") or 0), r.get("p99_ms") or 1e9)):
        calib = f"{r['calib_size']}{' ' + r['calib_method'] if r.get('calib_method') else ''}" if r.get("calib_size") else ""
        status = r["status"] + (" (reference)" if r["reference_only"] else "")
        if r.get("reason"):
            status += ": " + r["reason"][:120]
        if r.get("commands"):
            status += "<br><code>" + "</code><br><code>".join(html.escape(c) for c in r["commands"]) + "</code>"
        style = ' style="font-weight:bold"' if r["key"] in front else ""
        body.append(
            f"<tr{style}><td>{_cell(Path(r['run']).name)}</td><td>{_cell(r['backend'])}</td><td>{_cell(r['precision'])}</td>"
            f"<td>{_cell(calib)}</td><td>{r['threads']}</td><td>{r['batch']}</td>"
            f"<td>{_cell(None if r.get('accuracy') is None else 100 * r['accuracy'], '{:.2f}')}</td>"
            + "".join(f"<td>{_cell(100 * r['accuracy_by_snr'][s], '{:.2f}')}</td>" if "accuracy_by_snr" in r
                      else "<td></td>" for s in snrs)
            + f"<td>{_cell(r.get('p50_ms'), '{:.3f}')}</td><td>{_cell(r.get('p99_ms'), '{:.3f}')}</td>"
            f"<td>{_cell(r.get('p99_9_ms'), '{:.3f}')}</td><td>{_cell(r.get('peak_rss_mb'), '{:.0f}')}</td>"
            f"<td>{_cell(None if r.get('model_bytes') is None else r['model_bytes'] / 1024, '{:.0f}')}</td>"
            f"<td>{'' if status == 'ok' else status if '<code>' in status else html.escape(status)}</td></tr>")
    dev = doc["device"]
    versions = ", ".join(f"{k} {v}" for k, v in dev["versions"].items() if v)
    overhead = doc["runtime_overhead"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drsn-edge calibration</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:80em}}table{{border-collapse:collapse;font-size:0.85em}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
code{{font-size:0.9em}}</style></head><body>
<h1>Accuracy against latency</h1>
<p>Device: {html.escape(dev['cpu'])}, {dev['cores']} cores ({html.escape(dev['system'])}); {html.escape(versions)}.
Created {html.escape(doc['created'])}.</p>
<p>Accuracy: {html.escape(doc['accuracy_definition'])}. Latency: {html.escape(doc['latency_definition'])}.
Runtime overhead added to every candidate's p99 when choosing for a budget: {overhead['overhead_ms']:.3f} ms
({html.escape(overhead['source'])}). Rows in bold are on the Pareto front.</p>
{f'<img src="{html.escape(plot)}" alt="accuracy against p99 latency">' if plot else ''}
<table>{head}{''.join(body)}</table>
{('<p>Left out: ' + html.escape('; '.join(doc['left_out'])) + '</p>') if doc['left_out'] else ''}
</body></html>
"""
    path.write_text(page)
    return path
