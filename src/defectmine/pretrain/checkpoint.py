"""Resumable pretraining checkpoints without pickles: safetensors for tensors, JSON for the rest.

    <out>/checkpoint/state.json                   epoch, loss history, CPU time, run settings, file names
    <out>/checkpoint/network-0007.safetensors     state dict of the whole pretraining network
    <out>/checkpoint/optimizer-0007.safetensors   the optimizer's per-parameter tensors
                                                  (its param_groups and scalars are in state.json)

state.json is written last and atomically: it is the commit point, so a run killed mid-write leaves
the previous epoch's checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from defectmine.errors import DataError

STATE_FILE = "state.json"


@dataclass
class Checkpoint:
    """A finished epoch: `epoch` epochs are done; `run` holds the settings that produced it."""

    epoch: int
    history: list[float]
    cpu_seconds: float
    wall_seconds: float
    run: dict
    network: dict[str, torch.Tensor]
    optimizer: dict


def _split_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors of optimizer.state_dict() keyed "<param>.<name>", and everything else as JSON."""
    tensors, scalars = {}, {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        param, name = key.split(".", 1)
        state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(
    folder: Path, network: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int, history: list[float],
    cpu_seconds: float, wall_seconds: float, run: dict,
) -> None:
    """Write the checkpoint of `epoch` finished epochs and delete the previous one's tensor files."""
    folder.mkdir(parents=True, exist_ok=True)
    network_file, optimizer_file = f"network-{epoch:04d}.safetensors", f"optimizer-{epoch:04d}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, str(folder / network_file))
    tensors, rest = _split_optimizer_state(optimizer.state_dict())
    save_file(tensors, str(folder / optimizer_file))
    document = {
        "epoch": epoch, "history": history, "cpu_seconds": cpu_seconds, "wall_seconds": wall_seconds,
        "run": run, "network_file": network_file, "optimizer_file": optimizer_file, "optimizer": rest,
    }
    partial = folder / (STATE_FILE + ".partial")
    partial.write_text(json.dumps(document, indent=2))
    os.replace(partial, folder / STATE_FILE)
    for old in folder.glob("*.safetensors"):
        if old.name not in (network_file, optimizer_file):
            old.unlink()


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """The checkpoint in `folder`, or None when there is none."""
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        document = json.loads(state_path.read_text())
        network = load_file(str(folder / document["network_file"]))
        optimizer_tensors = load_file(str(folder / document["optimizer_file"]))
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise DataError(
            f"{folder}: unreadable pretraining checkpoint ({err}). Fix: delete the folder to start over, "
            "or pass resume=False (--no-resume)."
        ) from err
    return Checkpoint(
        epoch=document["epoch"], history=document["history"], cpu_seconds=document["cpu_seconds"],
        wall_seconds=document["wall_seconds"], run=document["run"], network=network,
        optimizer=_join_optimizer_state(optimizer_tensors, document["optimizer"]),
    )
