"""What every run, sweep and pretraining records about the software and machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from defectmine import __version__


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name ("AMD EPYC ...", "Intel(R) Xeon(R) ..."), or the architecture where the
    system does not say. Runs record it because the same seed and code can train differently on two
    CPU models: their kernels add floating-point numbers in another order (BENCHMARKS.md, issue 18)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Versions and machine facts recorded in every run."""
    import timm
    import torch
    import torchvision

    return {
        "defectmine": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
