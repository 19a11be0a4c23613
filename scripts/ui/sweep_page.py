"""The sweep's static page, reports/<sweep>/ui.html: what MLflow's UI cannot draw from a saved view.

MLflow's scatter chart colours each run on its own, so "loss against µ_rec, one line per budget" (the
isoFLOP curves, Parcae arXiv 2604.12946 §5.1) does not exist there. This page draws it from the same
store, then loss against T per run (the runs' ``eval/loss_vs_T``, step = T), then the table of the
sweep's runs (name, µ_rec, budget, tokens, eval/loss) and every figure the sweep's report already wrote
beside it. Its own figures go under reports/<sweep>/ui/, so the report's folder keeps only the report's.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

from sweep_view import LOSS, LOSS_VS_T, sweep_runs

PAGE = "ui.html"


def _rows(client, runs) -> list[dict]:
    rows = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        curve = sorted((p.step, p.value) for p in client.get_metric_history(r.info.run_id, LOSS_VS_T))
        rows.append({"name": r.info.run_name, "status": r.info.status, "mu": m.get("mu_rec"),
                     "budget": m.get("flop_budget"), "budget_s": t.get("budget", ""),
                     "tokens_s": t.get("tokens", ""), "loss": m.get(LOSS), "curve": curve})
    return rows


def _figures(rows: list[dict], out: Path) -> list[tuple[str, str]]:
    """(file, caption) of the page's two charts, drawn with matplotlib's file backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if r["loss"] is not None and r["mu"] is not None and math.isfinite(r["loss"])]
    budgets = sorted({r["budget"] for r in done if r["budget"] is not None})
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for b in budgets:
        pts = sorted((r["mu"], r["loss"]) for r in done if r["budget"] == b)
        label = next(r["budget_s"] for r in done if r["budget"] == b)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"C = {label} FLOPs")
    ax.set_xscale("log", base=2)
    mus = sorted({r["mu"] for r in done})
    ax.set_xticks(mus, [f"{m:g}" for m in mus])  # plain ticks at the grid's µ_rec, not 2⁰, 2¹
    ax.minorticks_off()
    ax.set_xlabel("µ_rec (training loops)")
    ax.set_ylabel("eval/loss at T = µ_rec")
    if budgets:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, never on data
    ax.set_title("loss against µ_rec, per budget")
    fig.tight_layout()
    fig.savefig(out / "loss_vs_mu.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for r in rows:
        if r["curve"]:
            ax.plot([p[0] for p in r["curve"]], [p[1] for p in r["curve"]], "o-", ms=3, label=r["name"])
    ax.set_xlabel("T (test-time loops)")
    ax.set_ylabel("eval/loss")
    if any(r["curve"] for r in rows):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=2 if len(rows) > 12 else 1)
    ax.set_title("loss against T, per run")
    fig.tight_layout()
    fig.savefig(out / "loss_vs_T.png", dpi=110)
    plt.close(fig)
    return [("ui/loss_vs_mu.png", "eval/loss against µ_rec, one line per FLOP budget"),
            ("ui/loss_vs_T.png", "eval/loss against the test-time loop count T, one line per run")]


def _num(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def write_page(client, experiment_id: str, sweep_id: str, reports: Path, mlflow_url: str = "") -> Path:
    """Write reports/<sweep_id>/ui.html (and its two figures); its path."""
    folder = reports / sweep_id
    rows = _rows(client, sweep_runs(client, experiment_id, sweep_id))
    figures = _figures(rows, folder / "ui")
    report_pngs = sorted(p.name for p in folder.glob("*.png"))
    e = html.escape
    body = [f"<h1>sweep {e(sweep_id)}: {len(rows)} runs</h1>"]
    if mlflow_url:
        body.append(f'<p>In MLflow: <a href="{e(mlflow_url)}">{e(mlflow_url)}</a></p>')
    body += [f'<figure><img src="{e(f)}" alt="{e(c)}"><figcaption>{e(c)}</figcaption></figure>'
             for f, c in figures]
    body.append('<table id="runs"><tr><th>run</th><th>µ_rec</th><th>budget (FLOPs)</th><th>tokens</th>'
                "<th>eval/loss</th><th>status</th></tr>")
    for r in rows:
        body.append(f"<tr><td>{e(r['name'] or '')}</td><td>{_num(r['mu'], 'g')}</td><td>{e(r['budget_s'])}</td>"
                    f"<td>{e(r['tokens_s'])}</td><td>{_num(r['loss'], '.4f')}</td><td>{e(r['status'])}</td></tr>")
    body.append("</table>")
    if report_pngs:
        body.append("<h2>the report's figures</h2>")
        body += [f'<figure><img src="{e(n)}" alt="{e(n)}"><figcaption>{e(n)}</figcaption></figure>'
                 for n in report_pngs]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
             "figure{display:inline-block;margin:0 1em 1em 0}img{max-width:760px}")
    page = folder / PAGE
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>sweep {e(sweep_id)}</title>"
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n", encoding="utf-8")
    return page
