"""Exceptions that defectmine raises on purpose.

Every message names the file or option at fault and says how to fix it; the CLI prints them
without a traceback.
"""


class DefectmineError(Exception):
    """Base class: an error the user can act on."""


class DataError(DefectmineError):
    """Bad input data: missing folder, unreadable image, mask of the wrong size, empty class, ..."""


class ConfigError(DefectmineError):
    """An unknown option or an invalid combination of settings."""


class NotFittedError(DefectmineError):
    """A detector was used before `fit` (or `load`)."""


def lookup(registry: dict, name: str, kind: str):
    """`registry[name]`, or a ConfigError naming the unknown `kind` and listing the known names."""
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown {kind} {name!r}; known: {', '.join(registry)}. Fix: use one of them.") from None
