"""`defectmine detectors`: every registered detector's -p options, with type, default and meaning."""

import json
import re
from dataclasses import MISSING, dataclass, fields
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from defectmine.cli import app
from defectmine.cli.detectors import detector_options
from defectmine.models.fcdd import FCDDConfig
from defectmine.models.registry import DETECTORS

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, list(args), terminal_width=80, env={"COLUMNS": "80"})


def _rows(output):
    """option name -> the first line of its table row."""
    return {m.group(1): m.group(0) for m in re.finditer(r"^([a-z_]+) +\S.*$", output, re.M)}


def test_lists_every_detector_and_every_option_with_its_default():
    result = _invoke("detectors")
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    blocks = re.split(r"^(?=\w+: )", result.output, flags=re.M)
    for name, cls in DETECTORS.items():
        block = next(b for b in blocks if b.startswith(f"{name}: "))
        rows = _rows(block)
        for f in fields(cls.Config):
            assert f.name in rows, f"{name}: option {f.name} missing"
            default = f.default_factory() if f.default is MISSING else f.default
            spelled = default if isinstance(default, str) else json.dumps(default)  # how -p reads values
            assert f" {spelled} " in rows[f.name] + " ", (name, f.name, rows[f.name])
    # a few values and meanings, checked by hand
    fcdd = next(b for b in blocks if b.startswith("fcdd: "))
    assert re.search(r"^epochs +int +30 +training epochs", fcdd, re.M)
    assert re.search(r"^lr +float +0\.001 ", fcdd, re.M)
    assert re.search(r"^stride +int +8 +output stride of the map", fcdd, re.M)  # FCDD's own text
    liac = next(b for b in blocks if b.startswith("liac: "))
    assert re.search(r"^acl_weight +float +1\.0 +weight of the ACL", liac, re.M)
    assert re.search(r"^stride +int +32 ", liac, re.M)
    assert "-p NAME=VALUE" in result.output and "--epochs" in result.output


def test_every_option_has_a_meaning():
    for name, cls in DETECTORS.items():
        for option in detector_options(cls.Config):
            assert option.meaning and not option.meaning.endswith((":", ";")), (name, option)


def test_one_detector_shows_full_descriptions_and_unknown_names_are_one_line():
    result = _invoke("detectors", "classifier")
    assert result.exit_code == 0, result.output
    assert "fcdd:" not in result.output and result.output.startswith("classifier: ")
    text = " ".join(result.output.split())
    assert "None: the labelled anomalies' share of the training set" in text  # the second sentence
    assert "'share of each batch that is anomalous" not in text
    result = _invoke("detectors", "nope")
    assert result.exit_code == 2 and "unknown detector 'nope'" in result.output
    assert "Traceback" not in result.output


def test_param_help_points_to_the_detectors_command():
    text = " ".join(_invoke("fit", "--help").output.split())
    assert "-p, --param KEY=VALUE" in text and "`defectmine detectors`" in text


def test_docstring_entries_continuation_lines_shared_lines_and_nearest_class():
    @dataclass
    class Base:
        """Base options.

        alpha: first option, described over
            two lines. Second sentence.
        beta: a key; gamma: its parameters, e.g. {"x": 1}.
        not_a_field: ignored.
        """

        alpha: int = 1
        beta: str = "b"
        gamma: dict | None = None

    @dataclass
    class Child(Base):
        """Child options.

        alpha: the child's own description.
        """

        detector_name: ClassVar[str] = "child"
        delta: float = 0.5

    base = {o.name: o for o in detector_options(Base)}
    assert base["alpha"].meaning == "first option, described over two lines."
    assert detector_options(Base, full=True)[0].meaning == "first option, described over two lines. Second sentence."
    assert base["beta"].meaning == "a key" and base["gamma"].meaning == 'its parameters, e.g. {"x": 1}.'
    assert (base["gamma"].type, base["gamma"].default) == ("dict | None", "null")
    child = {o.name: o for o in detector_options(Child)}
    assert child["alpha"].meaning == "the child's own description."
    assert child["beta"].meaning == "a key"  # inherited description
    assert child["delta"].meaning == "" and child["delta"].default == "0.5"
    assert [o.name for o in detector_options(FCDDConfig)] == [f.name for f in fields(FCDDConfig)]


@pytest.mark.parametrize("name", list(DETECTORS))
def test_each_detector_page_fits_80_columns(name):
    result = _invoke("detectors", name)
    assert result.exit_code == 0 and max(len(line) for line in result.output.splitlines()) <= 80
