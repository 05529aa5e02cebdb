"""Option validation of the app framework."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from caesar_rest.apps.base import App, Option, OptionError, parse_cli_options


def _opts() -> tuple[Option, ...]:
    return (
        Option("npix", "int", "n", default=5, min=1, max=100),
        Option("thr", "float", "t", default=5.0, min=0, max=50),
        Option("mode", "str", "m", default="a", allowed_values=("a", "b")),
        Option("label", "str", "free text"),
        Option("fast", "none", "a flag"),
        Option("need", "int", "mandatory", mandatory=True, min=0, max=9),
    )


@dataclass
class Demo(App):
    name: str = "demo"
    description: str = "demo"
    options: tuple[Option, ...] = field(default_factory=_opts)

    def command(self, input_path: Path, options: Mapping[str, Any], out_dir: Path) -> list[str]:
        return ["prog", str(input_path), *self.option_args(options)]


def test_valid_values_are_typed() -> None:
    out = Demo().validate(
        {"npix": "7", "thr": 3, "mode": "b", "fast": True, "need": 2.0, "label": "x"}
    )
    assert out == {"npix": 7, "thr": 3.0, "mode": "b", "label": "x", "fast": True, "need": 2}
    assert isinstance(out["thr"], float) and isinstance(out["need"], int)


def test_command_is_an_argument_list() -> None:
    app = Demo()
    args = app.command(
        Path("/x.fits"), app.validate({"need": 1, "fast": True, "label": "a b;rm"}), Path(".")
    )
    assert args == ["prog", "/x.fits", "--label=a b;rm", "--fast", "--need=1"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"need": 1, "npix": True}, "not a boolean"),
        ({"need": 1, "npix": 0}, "below its minimum"),
        ({"need": 1, "npix": 101}, "above its maximum"),
        ({"need": 1, "npix": 2.5}, "integer"),
        ({"need": 1, "thr": float("nan")}, "finite"),
        ({"need": 1, "thr": "abc"}, "takes a float"),
        ({"need": 1, "mode": "c"}, "must be one of"),
        ({"need": 1, "fast": "yes"}, "flag"),
        ({"need": 1, "label": 3}, "string"),
        ({"need": 1, "label": "x" * 5000}, "too long"),
        ({}, "mandatory option 'need'"),
        ({"need": 1, "nope": 1, "other": 2}, "unknown option(s) for app 'demo': nope, other"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid(inputs: Any, message: str) -> None:
    with pytest.raises(OptionError) as err:
        Demo().validate(inputs)
    assert message in str(err.value)


def test_all_problems_reported() -> None:
    with pytest.raises(OptionError) as err:
        Demo().validate({"npix": 0, "thr": -1, "x": 1})
    assert len(err.value.problems) == 4  # unknown, npix, thr, missing need


@dataclass
class Ordered(Demo):
    at_most: ClassVar[tuple[tuple[str, str], ...]] = (("thr", "npix"),)


def test_at_most_pairs_checked_with_defaults() -> None:
    app = Ordered()
    assert app.validate({"need": 1, "thr": 5.0}) == {"need": 1, "thr": 5.0}  # npix default 5
    with pytest.raises(OptionError) as err:
        app.validate({"need": 1, "thr": 6.0})
    assert err.value.problems == ["option 'thr' = 6.0 must not exceed npix = 5"]
    assert app.validate({"need": 1, "thr": 6.0, "npix": 6})["npix"] == 6
    assert Demo().validate({"need": 1, "thr": 6.0})["thr"] == 6.0  # no pairs: no check


def test_describe_shape() -> None:
    d = Demo().describe()
    assert d["npix"] == {
        "mandatory": False,
        "description": "n",
        "category": "",
        "subcategory": "",
        "advanced": 0,
        "enum": False,
        "type": "int",
        "effective": True,
        "default": 5,
        "min": 1,
        "max": 100,
    }
    assert d["mode"]["allowed_values"] == ["a", "b"] and "min" not in d["mode"]
    assert "default" not in d["fast"] and d["fast"]["type"] == "none"


def test_parse_cli_options() -> None:
    app = Demo()
    assert parse_cli_options(app, ["--npix", "4", "--fast", "--thr=2.5"]) == {
        "npix": "4",
        "fast": True,
        "thr": "2.5",
    }
    with pytest.raises(OptionError):
        parse_cli_options(app, ["--bogus", "1"])
    with pytest.raises(OptionError):
        parse_cli_options(app, ["--npix"])


@dataclass
class Threaded(App):
    """An app with the three core options, ``nthreads`` accepted without effect."""

    name: str = "threaded"
    description: str = "threaded"
    options: tuple[Option, ...] = (
        Option("nthreads", "int", "no effect here", default=1, min=-1, effective=False),
        Option("nproc", "int", "worker processes", default=1, min=1),
    )
    cores: int = 2


def test_job_cores_come_from_the_option_that_takes_effect() -> None:
    app = Threaded()
    assert app.job_cores(app.validate({"nthreads": 1, "nproc": 4})) == 4
    assert app.job_cores(app.validate({"nthreads": 8})) == 2  # no effect: the app's default
    assert app.job_cores({}) == 2


def test_caesar_reserves_nproc_not_nthreads() -> None:
    from caesar_rest.apps.caesar_app import CaesarApp

    app = CaesarApp()
    assert app.job_cores(app.validate({"nthreads": 1, "nproc": 4})) == 4
    assert app.job_cores(app.validate({"nthreads": 6})) == 1


def test_compat_run_keys_are_checked_and_kept_apart() -> None:
    app = Demo()
    options, compat = app.validate_compat(
        {"need": 1, "run": True, "envfile": "/x/setvars.sh", "no-mpi": True, "jobcpus": "4"}
    )
    assert options == {"need": 1}  # what the program gets
    assert compat == {"run": True, "envfile": "/x/setvars.sh", "no-mpi": True, "jobcpus": 4}
    assert app.without_effect({"need": 1, "run": True, "envfile": "e"}) == ["envfile", "run"]
    assert app.without_effect({"inputfile": "x", "run": True}, used=("inputfile",)) == ["run"]
    with pytest.raises(OptionError) as err:
        app.validate_compat({"run": "yes", "nope": 1, "envfile": 3})
    assert err.value.problems == [
        "unknown option(s) for app 'demo': nope",
        "mandatory option 'need' is missing",
        "option 'run' is a flag and takes true or false, got 'yes'",
        "option 'envfile' takes a string, got 3",
    ]
    with pytest.raises(OptionError, match="unknown option"):  # validate() alone refuses them
        app.validate({"need": 1, "run": True})


def test_an_app_declaring_a_run_key_keeps_its_own() -> None:
    from caesar_rest.apps.caesar_app import CaesarApp

    app = CaesarApp()
    assert "no-logredir" not in app.compat_options() and "run" in app.compat_options()
    options, compat = app.validate_compat({"no-logredir": True, "run": True, "seedthr": 4})
    assert options == {"no-logredir": True, "seedthr": 4.0} and compat == {"run": True}
    assert app.without_effect({"no-logredir": True, "run": True, "seedthr": 4}) == [
        "no-logredir",
        "run",
    ]
