"""The `--ray` options of `predict` and `sweep` (declared once here) and the Ray versions they select."""

from __future__ import annotations

from functools import partial

import typer

RAY = typer.Option(None, "--ray", help="Run as Ray tasks: auto (the cluster this machine joined with `ray start`, "
                   "else a local Ray on its cores) or the head's address HOST:6379 (ray://HOST:10001). "
                   "Needs pip install 'defectmine[ray]'.")
RAY_CPUS = typer.Option(1.0, "--ray-cpus", help="With --ray: CPU cores per task (torch uses that many threads).")
RAY_GPUS = typer.Option(0.0, "--ray-gpus", help="With --ray: GPUs per task (e.g. 1: one GPU per fit).")


def on_ray(command: str, address: str, cpus: float, gpus: float):
    """`predict_folder_ray` or `run_sweep_ray`, bound to the cluster address and the task resources
    (bad resources fail here, before anything runs)."""
    from defectmine.distributed import TaskResources, predict_folder_ray, run_sweep_ray

    function = {"predict": predict_folder_ray, "sweep": run_sweep_ray}[command]
    return partial(function, address=address, resources=TaskResources(cpus=cpus, gpus=gpus))
