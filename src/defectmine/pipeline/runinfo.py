"""What every run, sweep and pretraining records about the software and machine it ran on."""

from __future__ import annotations

import os
import platform

import numpy as np

from defectmine import __version__


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
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
