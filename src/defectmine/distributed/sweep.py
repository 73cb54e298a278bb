"""`sweep --ray`: the fits of a mining sweep as Ray tasks, one per (point, seed).

`run_sweep` still does everything around the fits (split, decoding once, resume, rows after every fit,
summary, report); only the loop over the fits is handed to Ray. The decoded images travel to the
object store once and every task reads them from there. Each fit depends on its point and seed only,
so the rows are those of the serial sweep (timings aside).
"""

from __future__ import annotations

from defectmine.distributed.cluster import TaskResources, ray_session, results_as_done, task_slots
from defectmine.evaluation.sweep import SweepResult
from defectmine.pipeline.sweep import run_sweep


def run_sweep_ray(base, *, address: str = "auto", resources: TaskResources | None = None,
                  **options) -> SweepResult:
    """`run_sweep` with every fit a Ray task asking for `resources` (default one core; e.g.
    `TaskResources(cpus=1, gpus=1)` for one GPU per fit, `TaskResources(cpus=4)` for four cores).

    address: as for `predict_folder_ray`; the cluster is reached before any image is decoded, so a
    wrong address fails at once. options: those of `run_sweep` (ratios or ks, seeds, out_dir, resume, ...).
    """
    resources = resources or TaskResources()
    with ray_session(address) as ray:
        task_slots(ray, resources)  # a request no node can meet fails now, not after decoding
        return run_sweep(base, fits=RayFits(resources), **options)


class RayFits:
    """run_sweep's `fits`: submit every job as a Ray task, yield (job, row) as each fit ends."""

    def __init__(self, resources: TaskResources) -> None:
        self.resources = resources

    def __call__(self, fit_one, jobs):
        if not jobs:  # a resumed sweep with nothing left to fit needs no cluster
            return
        with ray_session("auto") as ray:  # the session run_sweep_ray opened
            shared = ray.put(fit_one)  # the decoded sets, once for every task
            fit = ray.remote(fit_job).options(**self.resources.options())
            threads = max(1, int(self.resources.cpus))
            pieces = {fit.remote(shared, job, threads): f"sweep fit {job[0].label} seed {job[1]}" for job in jobs}
            job_of = dict(zip(pieces, jobs))
            for ref, row in results_as_done(ray, pieces):
                yield job_of[ref], row


def fit_job(fit_one, job, threads: int) -> dict:
    """One Ray task: one (point, seed) fitted and evaluated with the task's cores; its sweep row."""
    import torch

    torch.set_num_threads(threads)  # the cores Ray gave this task, not every core of the node
    return fit_one(job)
