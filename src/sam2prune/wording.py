"""Counted nouns in messages: ``counted(1, "object")`` is "1 object", ``counted(2, "object")``
"2 objects"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, in the plural (``plural``, else ``noun`` + "s") unless it is 1."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def no_effect(options: list[str]) -> str:
    """``"--a, --b have no effect"`` (``has`` for one option): the start of a refusal."""
    return f"{', '.join(options)} {'has' if len(options) == 1 else 'have'} no effect"


def amount(value: float, noun: str) -> str:
    """A possibly fractional ``value`` of ``noun``: "1 GPU", "0.5 GPUs", "2 GPUs"."""
    return f"{value:g} {noun if value == 1 else noun + 's'}"
