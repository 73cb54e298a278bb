"""`defectmine label init | next | import | export | status`: a persistent labelling loop.

The commands parse options and call `defectmine.labelling`; the state lives in PROJECT/labels.db.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from defectmine.cli.app import app, console, friendly_errors

label_app = typer.Typer(
    add_completion=False, rich_markup_mode=None, no_args_is_help=True,
    help="Label with a person in the loop: a pool in SQLite, ranked batches as Label Studio tasks with model "
         "proposals, imports of Label Studio / COCO exports, a manifest for fit.",
)
app.add_typer(label_app, name="label")

PROJECT = typer.Option(..., "--project", "-P", help="Project folder (labels.db, batches/, export/).")
WHO = typer.Option(None, "--who", help="Who does this (recorded with the change; default: the login name).")


def _who(who: Optional[str]) -> str:
    if who:
        return who
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@label_app.command("init")
@friendly_errors
def init(
    project: Path = PROJECT,
    images: Optional[str] = typer.Option(None, "--images", "-i", help="Folder of images (any layout), CSV manifest or one image to add to the pool."),
    classes: str = typer.Option("", help="Defect classes, comma-separated (needed for a new project; new ones are appended)."),
    who: Optional[str] = WHO,
):
    """Create a labelling project, or add images and classes to it (nothing is removed; re-running adds nothing twice).

    Example: defectmine label init --project proj/ --images parts/ --classes crack,scratch
    """
    from defectmine.labelling import init_project

    result = init_project(project, images, classes.split(","), _who(who))
    console.print(f"pool: [bold]{result['pool']}[/] image(s) ({result['new_images']} new); classes: "
                  f"{escape(', '.join(result['classes']))}")


@label_app.command("next")
@friendly_errors
def next_(
    project: Path = PROJECT,
    size: int = typer.Option(20, "--size", "-n", help="Images in the batch."),
    strategy: str = typer.Option("random", help="random, score (highest anomaly score first; needs --model), or an "
                                 "acquisition function: minority (needs --minority), bald, entropy, kcenter, anomaly."),
    minority: Optional[str] = typer.Option(None, help="The rare class to look for (--strategy minority)."),
    embed_weights: Optional[Path] = typer.Option(None, help="Encoder weights for the embeddings of bald / entropy / "
                                                 "kcenter / minority (e.g. `defectmine pretrain`'s backbone.safetensors)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Saved detector (a run's model/) that ranks the pool and proposes masks."),
    proposal_class: Optional[str] = typer.Option(None, help="Class given to the model's proposals (default: the project's first class)."),
    proposal_threshold: Optional[float] = typer.Option(None, help="Map threshold for proposals while no labelled mask exists to choose it on."),
    url_prefix: str = typer.Option("/data/local-files/?d=", help="Prefix of the image path in the Label Studio tasks."),
    again: bool = typer.Option(False, help="Also ask for images asked in earlier rounds and still unlabelled."),
    seed: int = typer.Option(0, help="Seed of the random strategy."),
    who: Optional[str] = WHO,
):
    """Write the next batch to label: batches/round-NNNN/ with batch.csv, images/, tasks.json (Label Studio,
    with proposals as pre-annotations when --model is given) and label_config.xml.

    Example: defectmine label next --project proj/ --size 20 --strategy score --model runs/parts/model
    """
    from defectmine.labelling import next_batch

    batch = next_batch(project, size, strategy=strategy, model=model, seed=seed, who=_who(who), again=again,
                       proposal_class=proposal_class, proposal_threshold=proposal_threshold, url_prefix=url_prefix,
                       minority=minority, embed_weights=embed_weights)
    console.print(f"round {batch.round_id}: [bold]{batch.n_images}[/] image(s) to label in "
                  f"[bold]{escape(str(batch.folder))}[/] (batch.csv, images/, tasks.json, label_config.xml)")
    if model is not None:
        console.print(f"proposals: {batch.n_proposals} ({escape(batch.note)})")


@label_app.command("import")
@friendly_errors
def import_(
    file: Path = typer.Argument(..., help="Label Studio JSON export or COCO .json file."),
    project: Path = PROJECT,
    format: str = typer.Option("auto", "--format", help="auto, labelstudio or coco."),
    who: Optional[str] = WHO,
):
    """Apply a Label Studio JSON export or a COCO file: all of it or (any problem) none of it; a file
    imported before changes nothing. Rewrites PROJECT/export/manifest.csv.

    Example: defectmine label import export.json --project proj/
    """
    from defectmine.labelling import import_file

    result = import_file(project, file, fmt=format, who=_who(who))
    console.print(f"{escape(result['format'])}: [bold]{result['written']}[/] new label(s), {result['unchanged']} "
                  f"already there, {result['without_annotation']} task(s) without annotation")
    console.print(f"manifest: [bold]{escape(result['manifest'])}[/]")


@label_app.command("export")
@friendly_errors
def export(
    project: Path = PROJECT,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for manifest.csv and masks/ (default PROJECT/export)."),
):
    """Write the labelled images as manifest.csv + masks/ for `defectmine fit --data` / `segment fit --data`."""
    from defectmine.labelling import export_manifest

    console.print(f"manifest: [bold]{escape(str(export_manifest(project, out)))}[/]")


@label_app.command("status")
@friendly_errors
def status(project: Path = PROJECT):
    """Pool, labels (normal and per class), rounds, imports and models of a project."""
    from defectmine.labelling import status as project_status

    s = project_status(project)
    table = Table(title=f"labelling project {escape(str(project))}")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [("pool", s["pool"]), ("labelled", s["labelled"]), ("unlabelled", s["pool"] - s["labelled"]),
            ("normal", s["normal"])] + [(f"anomalous: {c}", n) for c, n in s["anomalous"].items()] + [
            ("with a mask", s["with_mask"]), ("label rows (history)", s["label_rows"]), ("rounds", s["rounds"]),
            ("imports", s["imports"]), ("model versions", s["models"])]
    for name, count in rows:
        table.add_row(escape(name), str(count))
    console.print(table)
    if s["last_import"]:
        file, when, by = s["last_import"]
        console.print(f"last import: {escape(file)} at {when} by {escape(by)}")
