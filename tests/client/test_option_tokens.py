"""App options on the client's command line go through the apps' own token parser."""

from __future__ import annotations

import pytest

from caesar_rest.apps.base import Option, parse_option_tokens
from caesar_rest.client.cli import UsageError, _parse_option_tokens
from caesar_rest.client.models import AppOption


def _schema() -> list[AppOption]:
    # What `describe` gives the client: no Option objects, only names and types.
    return [
        AppOption.from_describe(o.name, o.describe())
        for o in (Option("seedthr", "float", default=5.0), Option("fast", "none"))
    ]


def test_same_values_as_the_programs() -> None:
    tokens = ["--seedthr", "4", "--fast=no"]
    flags = {"seedthr": False, "fast": True}
    expected = parse_option_tokens(tokens, flags, "sep")
    assert (
        _parse_option_tokens("sep", _schema(), tokens)
        == expected
        == {
            "seedthr": "4",
            "fast": False,
        }
    )


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["--colour", "red"], "unknown option"),
        (["--seedthr"], "needs a value"),
        (["--fast=maybe"], "is a flag"),
        (["seedthr"], "unexpected argument"),
    ],
)
def test_mistakes_are_usage_errors(tokens: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        _parse_option_tokens("sep", _schema(), tokens)
    assert "caesar-rest describe sep" in str(err.value)
