"""`defectmine detectors`: every registered detector with the options `-p key=value` accepts.

The options are the fields of each detector's config dataclass (name, type, default); their meaning
is read from the docstrings of that class and its bases, where fields are described as
``name: text`` lines (the nearest class wins, so a detector that redefines `stride` shows its own).
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from defectmine.cli.app import app, console, friendly_errors
from defectmine.cli.options import MODEL_OPTIONS

_ENTRY = re.compile(r"^(\s*)([A-Za-z_]\w*): (.*)$")
# A sentence ends at ". " before a capital letter, so "e.g. {...}" and "(8: ...)" stay inside.
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z\"'])")


@dataclass(frozen=True)
class DetectorOption:
    """One `-p` option of a detector: its name, type, default (as `-p` would spell it) and meaning."""

    name: str
    type: str
    default: str
    meaning: str


def _type_name(kind) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(k) for k in typing.get_args(kind))
    if kind is type(None):
        return "None"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(kind, "__name__", str(kind))


def _spelled(value) -> str:
    """A default as the `-p` value that gives it: values are read as JSON, bare words as text."""
    if value is MISSING:
        return "(required)"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _entries(doc: str, names: set[str]) -> dict[str, str]:
    """``name: text`` descriptions of the given field names in one docstring, continuation lines
    (indented deeper) joined; ``a: ...; b: ...`` on one line describes two fields."""
    found: dict[str, str] = {}
    current, indent = None, 0
    for line in inspect.cleandoc(doc).splitlines():
        match = _ENTRY.match(line)
        if match and match.group(2) in names:
            current, indent = match.group(2), len(match.group(1))
            found[current] = match.group(3)
        elif current and line.strip() and len(line) - len(line.lstrip()) > indent:
            found[current] += " " + line.strip()
        else:
            current = None
    for name, text in list(found.items()):
        parts = re.split(r";\s+(\w+):\s+", text)
        found[name] = parts[0]
        for other, other_text in zip(parts[1::2], parts[2::2]):
            if other in names:
                found.setdefault(other, other_text)
            else:  # not a field after all: keep the text whole
                found[name] += f"; {other}: {other_text}"
    return {name: " ".join(text.split()) for name, text in found.items()}


def _first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def detector_options(config_class: type, *, full: bool = False) -> list[DetectorOption]:
    """The options of a detector config dataclass, in declaration order; each meaning is the first
    sentence of its description, or all of it when `full`."""
    names = {f.name for f in fields(config_class)}
    described: dict[str, str] = {}
    for klass in config_class.__mro__:  # nearest class first: its description wins
        for name, text in _entries(klass.__dict__.get("__doc__") or "", names).items():
            described.setdefault(name, text)
    hints = typing.get_type_hints(config_class)
    options = []
    for f in fields(config_class):
        default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
        meaning = described.get(f.name, "")
        meaning = meaning if full else _first_sentence(meaning)
        options.append(DetectorOption(f.name, _type_name(hints.get(f.name, f.type)), _spelled(default), meaning))
    return options


def detector_summary(detector_class: type) -> str:
    """First line of the detector's module docstring (what the method is, with its paper)."""
    doc = sys.modules[detector_class.__module__].__doc__ or detector_class.__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def print_detectors(console: Console, name: str | None = None, *, flags: dict[str, str] | None = None) -> None:
    """One table per registered detector (or only `name`, with its options' full descriptions):
    option, type, default and meaning. `flags` maps option names to the command-line options of
    fit and sweep that set them, for a closing note."""
    from defectmine.errors import lookup
    from defectmine.models.registry import DETECTORS

    names = list(DETECTORS) if name is None else [name]
    for detector in names:
        cls = lookup(DETECTORS, detector, "detector")
        console.print(f"[bold]{detector}[/]: {escape(detector_summary(cls))}", highlight=False)
        # no_wrap on the short columns: only the meaning wraps, names and defaults stay whole
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("option", "type", "default"):
            table.add_column(column, no_wrap=True)
        table.add_column("meaning", ratio=1)
        for option in detector_options(cls.Config, full=name is not None):
            table.add_row(option.name, option.type, escape(option.default), escape(option.meaning))
        console.print(table)
        console.print()
    console.print("Set them with -p NAME=VALUE (repeatable), e.g. -p lr=0.0005 -p synthetic=none.", highlight=False)
    fields_of_any = {f.name for cls in DETECTORS.values() for f in fields(cls.Config)}
    set_by = [flag for option, flag in (flags or {}).items() if option in fields_of_any]
    if set_by:
        listed = ", ".join(set_by[:-1]) + f" and {set_by[-1]}" if len(set_by) > 1 else set_by[0]
        console.print(f"In fit and sweep, {listed} set the options of the same name (with their own defaults); "
                      "-p takes precedence.", highlight=False)


@app.command()
@friendly_errors
def detectors(name: Optional[str] = typer.Argument(None, help="Only this detector, with full descriptions.")):
    """List the registered detectors and their -p options: name, type, default and meaning."""
    flags = {field: "--" + field.replace("_", "-") for field in MODEL_OPTIONS} | {"seed": "--seed (sweep: --seeds)"}
    print_detectors(console, name, flags=flags)
