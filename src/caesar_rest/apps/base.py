"""App framework: option schemas, validation and command building.

An app declares its options (name, type, default, bounds, allowed values, ...), the argument list
of the program it runs (never a shell string) and the result files it writes. The service, the
job backends and ``caesar-rest find`` all go through this one description.
"""

from __future__ import annotations

import math
import re
import sys
from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from caesar_rest.errors import Invalid

OptionType = Literal["none", "int", "float", "str"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
MAX_STR_LEN = 1024


@dataclass(frozen=True)
class Option:
    """One app option.

    Parameters
    ----------
    name
        Option name as used in ``job_inputs`` and on the command line (``--name=value``).
    type
        ``"none"`` for a flag (a JSON boolean, emitted as ``--name`` when true), else the
        value type.
    default
        Default value, applied by the program when the option is absent.
    min, max
        Inclusive numeric bounds, enforced at validation.
    allowed_values
        For enumerations: the accepted strings.
    """

    name: str
    type: OptionType
    description: str = ""
    default: Any = None
    min: float | None = None
    max: float | None = None
    allowed_values: tuple[str, ...] | None = None
    mandatory: bool = False
    category: str = ""
    subcategory: str = ""
    advanced: bool = False
    #: False when the option is accepted for compatibility but has no effect here.
    effective: bool = True

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad option name {self.name!r}")

    @property
    def is_flag(self) -> bool:
        """Whether the option is a boolean flag."""
        return self.type == "none"

    def describe(self) -> dict[str, Any]:
        """Describe the option in the predecessor's ``describe`` shape (plus ``effective``)."""
        out: dict[str, Any] = {
            "mandatory": self.mandatory,
            "description": self.description,
            "category": self.category,
            "subcategory": self.subcategory,
            "advanced": int(self.advanced),
            "enum": self.allowed_values is not None,
            "type": self.type,
            "effective": self.effective,
        }
        if self.allowed_values is not None:
            out["default"] = self.default
            out["allowed_values"] = list(self.allowed_values)
        elif not self.is_flag:
            out["default"] = self.default
            out["min"] = "" if self.min is None else self.min
            out["max"] = "" if self.max is None else self.max
        return out

    def check(self, value: Any) -> Any:
        """Check and normalise one value.

        Returns the typed value; raises ``ValueError`` with a message naming the option.
        """
        n = self.name
        if self.is_flag:
            if not isinstance(value, bool):
                raise ValueError(f"option '{n}' is a flag and takes true or false, got {value!r}")
            return value
        if self.allowed_values is not None:
            if not isinstance(value, str) or value not in self.allowed_values:
                allowed = ", ".join(self.allowed_values)
                raise ValueError(f"option '{n}' must be one of {allowed}; got {value!r}")
            return value
        if self.type == "str":
            if not isinstance(value, str):
                raise ValueError(f"option '{n}' takes a string, got {value!r}")
            if len(value) > MAX_STR_LEN or "\x00" in value:
                raise ValueError(f"option '{n}' is too long or holds a NUL character")
            return value
        return self._check_bounds(self._number(value))

    def _number(self, value: Any) -> int | float:
        # The value as the option's number type (int or float).
        n = self.name
        # Booleans are refused even though bool is an int subclass in Python.
        if isinstance(value, bool):
            raise ValueError(f"option '{n}' takes a number ({self.type}), not a boolean")
        num: int | float
        if isinstance(value, str):  # the predecessor accepted numeric strings
            try:
                num = int(value) if self.type == "int" else float(value)
            except ValueError:
                raise ValueError(f"option '{n}' takes a {self.type}, got {value!r}") from None
        elif isinstance(value, int | float):
            num = value
        else:
            raise ValueError(f"option '{n}' takes a {self.type}, got {value!r}")
        if isinstance(num, float) and not math.isfinite(num):
            raise ValueError(f"option '{n}' must be finite, got {value!r}")
        if self.type != "int":
            return float(num)
        if isinstance(num, float):
            if not num.is_integer():
                raise ValueError(f"option '{n}' takes an integer, got {value!r}")
            num = int(num)
        return num

    def _check_bounds(self, num: int | float) -> int | float:
        n = self.name
        if self.min is not None and num < self.min:
            raise ValueError(f"option '{n}' = {num} is below its minimum {self.min}")
        if self.max is not None and num > self.max:
            raise ValueError(f"option '{n}' = {num} is above its maximum {self.max}")
        return num


class OptionError(Invalid):
    """Validation failed; ``problems`` lists one message per bad option."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ResultSpec:
    """A named result an app writes in its output folder."""

    name: str
    filename: str
    mime: str
    required: bool = False


#: Results every catalogue-producing app writes (the shared output model).
CATALOGUE_RESULTS: tuple[ResultSpec, ...] = (
    ResultSpec("catalog", "catalog.vot", "application/x-votable+xml", required=True),
    ResultSpec("catalog-csv", "catalog.csv", "text/csv", required=True),
    ResultSpec("catalog-json", "catalog.json", "application/json", required=True),
    ResultSpec("regions", "catalog.reg", "text/plain"),
    ResultSpec("preview", "preview.png", "image/png"),
    ResultSpec("preview-thumb", "preview-thumb.png", "image/png"),
    ResultSpec("summary", "summary.json", "application/json"),
)

#: Component (fitted Gaussian) catalogue of apps that have one besides their source catalogue.
COMPONENT_RESULTS: tuple[ResultSpec, ...] = (
    ResultSpec("components", "components.vot", "application/x-votable+xml"),
    ResultSpec("components-csv", "components.csv", "text/csv"),
    ResultSpec("components-json", "components.json", "application/json"),
    ResultSpec("components-regions", "components.reg", "text/plain"),
)

LOG_RESULT = ResultSpec("log", "job.log", "text/plain")


def _compat(name: str, kind: OptionType, what: str) -> Option:
    return Option(
        name,
        kind,
        f"Predecessor's run-control key ({what}); accepted without effect",
        category="RUN",
        effective=False,
    )


#: The predecessor's run-control keys of ``job_inputs``: how its scripts were launched (shell
#: environment, MPI, containers, batch submission, log redirection, output flags it always set).
#: Some version of its ``caesar`` configurator accepted each; its README's job request sends
#: ``inputfile``, ``run``, ``envfile``, ``no-logredir`` and ``no-mpi``. Every app accepts them
#: (unless it declares the name itself), checks their type, and runs without them: they are
#: named in the submit answer and the job log. ``inputfile`` is the input image when the
#: request has no ``data_inputs`` (``JobService.create``).
COMPAT_RUN_OPTIONS: tuple[Option, ...] = (
    _compat("inputfile", "str", "the input image: a file id or an upload's path"),
    _compat("filelist", "str", "a list of input files"),
    _compat("run", "none", "run the generated script"),
    _compat("envfile", "str", "a shell file of environment variables"),
    _compat("maxfiles", "int", "files processed from filelist"),
    _compat("addrunindex", "none", "run index in the script name"),
    _compat("jobdir", "str", "the run folder"),
    _compat("outdir", "str", "the output folder"),
    _compat("no-logredir", "none", "no log redirection: job.log always holds the output"),
    _compat("no-mpi", "none", "no MPI run"),
    _compat("mpioptions", "str", "MPI options"),
    _compat("hostfile", "str", "MPI host file"),
    _compat("containerrun", "none", "run in a container"),
    _compat("containerimg", "str", "container image"),
    _compat("containeroptions", "str", "container options"),
    _compat("submit", "none", "submit to a batch system"),
    _compat("batchsystem", "str", "batch system"),
    _compat("queue", "str", "batch queue"),
    _compat("jobwalltime", "str", "batch wall time"),
    _compat("jobcpus", "int", "batch cpus per node"),
    _compat("jobnodes", "int", "batch nodes"),
    _compat("jobmemory", "float", "batch memory"),
    _compat("jobusergroup", "str", "batch user group"),
    _compat("save-regions", "none", "DS9 regions: always written"),
    _compat("save-summaryplot", "none", "summary plot: the preview is always drawn"),
    _compat("save-catalog-to-json", "none", "JSON catalogue: always written"),
)


@dataclass
class App(ABC):
    """Base class of every app."""

    name: str
    description: str
    options: tuple[Option, ...]
    results: tuple[ResultSpec, ...] = field(default=CATALOGUE_RESULTS)
    #: Default number of cores a job of this app uses (for schedulers).
    cores: int = 1
    #: The app's program module (``--input``, ``--outdir``, one argument per option), run by
    #: the default :meth:`command`.
    program: ClassVar[str] = ""
    #: ``(small, large)`` option pairs where ``small`` must not exceed ``large`` (a grid step
    #: inside its box, ...), checked by :meth:`validate` with the defaults filled in.
    at_most: ClassVar[tuple[tuple[str, str], ...]] = ()

    def option_map(self) -> dict[str, Option]:
        """Options by name."""
        return {o.name: o for o in self.options}

    def job_cores(self, options: Mapping[str, Any]) -> int:
        """Cores a job with these options uses (for schedulers): the first of the app's
        ``ncores``, ``nthreads``, ``nproc`` options that takes effect here and is given, else
        :attr:`cores`. An option accepted without effect never sizes the reservation (the
        ``caesar`` app's ``nthreads`` does nothing; its ``nproc`` sets the worker processes)."""
        own = self.option_map()
        for name in ("ncores", "nthreads", "nproc"):
            opt = own.get(name)
            if opt is None or not opt.effective:
                continue
            value = options.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return self.cores

    def availability(self) -> tuple[bool, str | None]:
        """Whether the app can run on this machine, and why not."""
        return True, None

    def describe(self) -> dict[str, Any]:
        """Option schema keyed by option name (the predecessor's ``describe`` shape)."""
        return {o.name: o.describe() for o in self.options}

    def validate(self, job_inputs: Any) -> dict[str, Any]:
        """Validate ``job_inputs`` and return the typed options.

        Raises
        ------
        OptionError
            With one message per problem: unknown names, bad types, out-of-range values,
            missing mandatory options.
        """
        if job_inputs is None:
            job_inputs = {}
        if not isinstance(job_inputs, Mapping):
            raise OptionError(["job_inputs must be a JSON object of option names and values"])
        known = self.option_map()
        problems: list[str] = []
        unknown = sorted(str(k) for k in job_inputs if k not in known)
        if unknown:
            problems.append(f"unknown option(s) for app '{self.name}': {', '.join(unknown)}")
        out: dict[str, Any] = {}
        for opt in self.options:
            if opt.name not in job_inputs:
                if opt.mandatory:
                    problems.append(f"mandatory option '{opt.name}' is missing")
                continue
            try:
                out[opt.name] = opt.check(job_inputs[opt.name])
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise OptionError(problems)
        for small, large in self.at_most:
            self._check_at_most(out, small, large)
        return out

    def _check_at_most(self, out: Mapping[str, Any], small: str, large: str) -> None:
        """Raise :class:`OptionError` when option ``small`` exceeds option ``large``."""
        known = self.option_map()
        value = out.get(small, known[small].default)
        limit = out.get(large, known[large].default)
        if value > limit:
            raise OptionError([f"option '{small}' = {value} must not exceed {large} = {limit}"])

    def compat_options(self) -> dict[str, Option]:
        """The predecessor's run-control keys (:data:`COMPAT_RUN_OPTIONS`) this app does not
        declare itself, by name."""
        own = self.option_map()
        return {o.name: o for o in COMPAT_RUN_OPTIONS if o.name not in own}

    def validate_compat(self, job_inputs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """:meth:`validate`, accepting the predecessor's run-control keys as well.

        Returns
        -------
        options, compat
            The typed options of the app (what the program gets) and the run-control keys
            given, type-checked (what it does not get).

        Raises
        ------
        OptionError
            With every problem at once: those of :meth:`validate` (names that no version
            had are "unknown"), then badly typed run-control keys.
        """
        if not isinstance(job_inputs, Mapping):
            return self.validate(job_inputs), {}
        known = self.compat_options()
        rest: dict[str, Any] = {}
        compat: dict[str, Any] = {}
        problems: list[str] = []
        for name, value in job_inputs.items():
            opt = known.get(name)
            if opt is None:
                rest[name] = value
                continue
            try:
                compat[name] = opt.check(value)
            except ValueError as exc:
                problems.append(str(exc))
        options: dict[str, Any] = {}
        try:
            options = self.validate(rest)
        except OptionError as exc:
            problems = [*exc.problems, *problems]
        if problems:
            raise OptionError(problems)
        return options, compat

    def without_effect(self, job_inputs: Any, *, used: Sequence[str] = ()) -> list[str]:
        """Names in ``job_inputs`` that change nothing here, sorted: the app's options
        declared ``effective=False`` and the predecessor's run-control keys, except ``used``
        (``inputfile`` when it named the input)."""
        if not isinstance(job_inputs, Mapping):
            return []
        own, compat = self.option_map(), self.compat_options()
        names = [
            str(k)
            for k in job_inputs
            if k not in used and (k in compat or (k in own and not own[k].effective))
        ]
        return sorted(names)

    def option_args(self, options: Mapping[str, Any]) -> list[str]:
        """Command-line arguments for validated options, in declaration order."""
        args: list[str] = []
        for opt in self.options:
            if opt.name not in options:
                continue
            value = options[opt.name]
            if opt.is_flag:
                if value:
                    args.append(f"--{opt.name}")
                elif opt.default is True:  # a flag on by default is turned off explicitly
                    args.append(f"--{opt.name}=false")
            else:
                args.append(f"--{opt.name}={value}")
        return args

    def command(self, input_path: Path, options: Mapping[str, Any], out_dir: Path) -> list[str]:
        """The argument list that runs this app on ``input_path``, writing into ``out_dir``.

        By default the in-tree program :attr:`program`: ``python -m <program> --input X
        --outdir D --opt=value ...``. Apps that run something else override this.

        Parameters
        ----------
        input_path
            The FITS image.
        options
            Validated options (from :meth:`validate`).
        out_dir
            Folder receiving the result files.

        Returns
        -------
        list of str
            The argument list (never a shell string).
        """
        if not self.program:
            raise NotImplementedError(f"app {self.name!r} has no program and no command()")
        return python_module_command(
            self.program,
            "--input",
            str(input_path),
            "--outdir",
            str(out_dir),
            *self.option_args(options),
        )


def python_module_command(module: str, *args: str) -> list[str]:
    """Argument list that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def parse_cli_options(app: App, tokens: Sequence[str]) -> dict[str, Any]:
    """Turn ``--name value``/``--name=value``/``--flag`` tokens into a ``job_inputs`` dict.

    Values stay strings; :meth:`App.validate` casts and checks them.

    Parameters
    ----------
    app
        The app whose options the tokens name.
    tokens
        The command-line tokens.

    Returns
    -------
    dict
        Option name to value (a string, or a boolean for a flag).

    Raises
    ------
    OptionError
        On a token that is no option, an unknown option, a flag given a value that is not a
        boolean, or a missing value.
    """
    return parse_option_tokens(tokens, {o.name: o.is_flag for o in app.options}, app.name)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_option_tokens(
    tokens: Sequence[str], flags: Mapping[str, bool], app_name: str
) -> dict[str, Any]:
    """The one parser of app-option tokens: for the app programs, ``caesar-rest find`` and the
    client (which knows the options only from the service's ``describe``).

    Parameters
    ----------
    tokens
        ``--name value``, ``--name=value`` or ``--flag`` (``--flag=true|false|1|0|yes|no``).
    flags
        Every known option name, mapped to whether it is a flag.
    app_name
        App name, for messages.

    Returns
    -------
    dict
        Option name to value (a string, or a boolean for a flag).

    Raises
    ------
    OptionError
        On a token that is no option, an unknown option, a bad flag value or a missing value.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise OptionError([f"unexpected argument {tok!r}; options look like --name value"])
        name, eq, val = tok[2:].partition("=")
        if name not in flags:
            raise OptionError([f"unknown option(s) for app '{app_name}': {name}"])
        if flags[name]:
            out[name] = _flag_value(name, val) if eq else True
        elif eq:
            out[name] = val
        else:
            if i + 1 >= len(tokens):
                raise OptionError([f"option '{name}' needs a value"])
            out[name] = tokens[i + 1]
            i += 1
        i += 1
    return out


def _flag_value(name: str, value: str) -> bool:
    low = value.lower()
    if low not in (*_TRUE, *_FALSE):
        raise OptionError([f"option '{name}' is a flag; use --{name} alone"])
    return low in _TRUE
