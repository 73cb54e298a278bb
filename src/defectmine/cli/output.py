"""What the commands print: metric tables and the sweep summary."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from defectmine.cli.app import console


def print_metrics(metrics: dict, run_dir: Path | None = None) -> None:
    """A table of the test (or val) metrics, and where the report is."""
    part = "test" if metrics.get("test") else "val"
    table = Table(title=f"{part} metrics (threshold: {metrics['threshold']['rule']} = {metrics['threshold']['value']:.4g})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("auroc", "auprc", "f1", "precision", "recall", "accuracy"):
        value = metrics[part].get(key)
        table.add_row(key, "n/a" if value is None else f"{value:.3f}")
    for key, value in (metrics.get("test_pixel") or {}).items():
        if isinstance(value, float):
            table.add_row(f"pixel {key}", f"{value:.3f}")
    timing = metrics.get("timing", {})
    if timing.get("fit_seconds") is not None:
        table.add_row("fit seconds", f"{timing['fit_seconds']:.1f}")
    table.add_row("score ms/image", f"{timing.get('score_ms_per_image', float('nan')):.2f}")
    console.print(table)
    if run_dir is not None:
        console.print(f"report: [bold]{Path(run_dir) / 'report.html'}[/]")


def print_sweep(result) -> None:
    """The sweep's summary table, its recommendation and where its files are."""
    from defectmine.report.sweep import display_rows

    rows = display_rows(result.summary)
    # the columns that fit 80 characters; the report and sweep.csv have all of them
    columns = ["point", "anomalies", "AUROC", "F1", "phase"]
    table = Table(title=f"mining sweep ({len(result.rows)} fits; test metrics, mean ± std over seeds)")
    for column in columns:
        table.add_column(column, justify="left" if column in ("point", "phase") else "right", no_wrap=column != "phase")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)
    console.print(f"[bold]recommendation:[/] {escape(result.recommendation)}", soft_wrap=True)
    console.print(f"report: [bold]{result.files['report']}[/]")
