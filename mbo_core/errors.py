"""Errors that the `mbo` command reports as one line on stderr with exit code 2."""

from __future__ import annotations


class MboError(Exception):
    """A failure caused by the user's input or environment, with a message fit to show as is."""


class InputError(MboError):
    """Bad input: a missing, unreadable, truncated or wrong-kind file, or a bad argument."""
