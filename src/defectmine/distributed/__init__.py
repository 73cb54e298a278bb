"""Scale out with Ray: `predict` over a folder and the fits of a `sweep` as Ray tasks.

    from defectmine.distributed import predict_folder_ray, run_sweep_ray
    predict_folder_ray(Path("runs/parts/model"), "new_images/", Path("preds"), address="auto")

Ray does the distribution; this package only cuts the work into tasks, reuses the pipeline's own
steps inside them and merges their results into the outputs one process writes. Ray is an optional
dependency (`pip install 'defectmine[ray]'`): nothing here imports it before a call needs it.
"""

from defectmine.distributed.cluster import TaskResources, WorkerError, ray_session
from defectmine.distributed.predict import predict_folder_ray
from defectmine.distributed.sweep import run_sweep_ray

__all__ = ["TaskResources", "WorkerError", "predict_folder_ray", "ray_session", "run_sweep_ray"]
