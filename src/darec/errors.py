"""The library's own errors: what a user can cause and fix (a bad setting, file, data set or
request). The command line reports these in one line and a server answers them with a 4xx;
any other exception is a bug in darec and keeps its traceback, so it gets reported."""

from __future__ import annotations


class DarecError(Exception):
    """Base of every error darec raises on purpose."""


class InputError(DarecError, ValueError):
    """A value handed to darec cannot be used: an empty history, k < 1, runs that cannot be paired."""


class UnknownKey(DarecError, KeyError):
    """A name or id that is not there: an item id outside the catalogue, a metric, a group."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunInUse(DarecError, RuntimeError):
    """A run directory another process is training."""
