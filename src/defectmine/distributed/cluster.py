"""Connecting to Ray, sizing tasks to the cluster, and collecting task results with clear errors.

Ray does the distribution (placement, retries of lost workers, object transfer); this module only
turns its failures into one line that names the piece of work and the fix.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import defectmine
from defectmine.errors import ConfigError, DefectmineError

#: Seconds to wait for the head node to answer before saying it cannot be reached.
CONNECT_SECONDS = 5.0
INSTALL = "pip install 'defectmine[ray]'"
#: How workers on other machines find defectmine and the files (README "Scale out with Ray").
CLUSTER_HINT = ("every Ray node needs the same defectmine, torch and ray installed, and the model, data and "
                "--out paths reachable under the same names (a shared filesystem)")


class WorkerError(DefectmineError):
    """A Ray task failed for a reason other than bad input (a crashed worker, a missing package)."""


@dataclass(frozen=True)
class TaskResources:
    """What one Ray task asks for: `cpus` cores (torch uses that many threads) and `gpus` GPUs."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if not self.cpus > 0:
            raise ConfigError(f"--ray-cpus {self.cpus}: must be more than 0 (cores per task, e.g. 1).")
        if self.gpus < 0:
            raise ConfigError(f"--ray-gpus {self.gpus}: must be 0 (CPU only) or more (e.g. 1 GPU per task).")

    def options(self) -> dict:
        """Keyword arguments of `remote_function.options(...)`."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}


def import_ray():
    """The ray module, or one ConfigError with the install command."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs the ray package, which is not installed. Fix: {INSTALL} "
                          "(or pip install ray), or drop --ray to run in this process.") from None
    return ray


@contextmanager
def ray_session(address: str) -> Iterator:
    """Ray, connected: to the session this program already started (`ray.init` before the call),
    else to `address`, where "auto" is the cluster this machine belongs to (`ray start`, or
    $RAY_ADDRESS) or, when there is none, a local Ray on this machine's cores. A session this
    function started is shut down when the block ends."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if not str(address).strip():
        raise ConfigError("--ray: give auto or the cluster's address (HOST:6379, or ray://HOST:10001).")
    try:
        if address != "auto":
            _check_reachable(address)
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 logging_level=logging.WARNING, runtime_env=_same_code() if address == "auto" else None)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"--ray {address}: cannot connect to a Ray cluster there ({first}). Fix: start one with "
            "`ray start --head` and pass its address (HOST:6379, or ray://HOST:10001 from another network), "
            "or --ray auto for this machine."
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _same_code() -> dict:
    """Workers on this machine import the defectmine this program runs (a source checkout before an
    installed copy), not whichever one their own sys.path finds first."""
    source = str(Path(defectmine.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def _check_reachable(address: str) -> None:
    """A ConnectionError within seconds when nothing listens at HOST:PORT (ray.init would retry for
    minutes before it gives up)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("expected HOST:PORT, e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {host}:{port}: {err.strerror or err}") from None


def task_slots(ray, resources: TaskResources) -> int:
    """How many tasks of `resources` the cluster runs at once; a ConfigError when no node can run one
    (Ray would otherwise wait for ever for a node that never comes)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    fits = [min(n.get("CPU", 0) // resources.cpus,
                n.get("GPU", 0) // resources.gpus if resources.gpus else float("inf")) for n in nodes]
    if not fits or max(fits) < 1:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise ConfigError(
            f"--ray-cpus {resources.cpus:g} --ray-gpus {resources.gpus:g}: no node of the Ray cluster has that much "
            f"(the largest has {largest.get('CPU', 0):g} CPU(s) and {largest.get('GPU', 0):g} GPU(s)). "
            "Fix: ask for less per task, or add a node that has it."
        )
    return int(sum(fits))


#: Seconds to wait for cancelled tasks to end before the error is raised.
CANCEL_WAIT_S = 60

def results_as_done(ray, pieces: dict) -> Iterator[tuple[object, object]]:
    """(ref, result) of every task in `pieces` (ObjectRef -> a name for the piece of work) as each
    ends. The first failure stops the rest (they are cancelled) and raises one error naming the piece:
    our own errors keep their type and message; anything else becomes a WorkerError."""
    pending = list(pieces)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield done[0], ray.get(done[0])
            except ray.exceptions.RayError as err:
                raise task_error(pieces[done[0]], err) from None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if pending:
            # cancelling is asynchronous: wait until the cancelled tasks have ended, so that none of them
            # still writes into the staging folder that the caller removes next
            ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_S)


def task_error(piece: str, err: Exception) -> DefectmineError:
    """One error for a failed Ray task: `piece` names the work (a share of files, a sweep point)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, DefectmineError):
        return type(cause)(f"{piece}: {cause}")
    if cause is not None:
        what = f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
    else:
        what = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return WorkerError(f"{piece} failed on a Ray worker ({what}). Fix: {CLUSTER_HINT}; `ray logs` on the "
                       "head node shows the worker's whole traceback.")
