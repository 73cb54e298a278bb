"""Package namespaces whose names are imported on first use (PEP 562), so that importing one light
module of a package (e.g. `defectmine.data.images`) does not import torch through the package's
`__init__`. That keeps `predict --model model.onnx` free of torch.

    __getattr__, __dir__ = lazy_exports(__name__, globals(), {"ImageDataset": "dataset", ...})
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, namespace: dict, exports: dict[str, str]):
    """(`__getattr__`, `__dir__`) for `package`: `exports` maps each public name to the submodule that
    defines it ("dataset"), or to "submodule:attribute" when the package renames it. A name is imported
    once, on first access, and then kept in the package's namespace. A name must not also be a
    submodule's: importing the submodule would put the module in its place."""

    def __getattr__(name: str):
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        value = getattr(importlib.import_module(f"{package}.{module}"), attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
