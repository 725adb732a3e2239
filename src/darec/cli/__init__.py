"""The ``darec`` command line: ``app`` with its commands (each module registers its own, in
the order ``darec --help`` lists them)."""

from darec.cli import train  # noqa: I001, F401  (registration, in this order)
from darec.cli import runs  # noqa: F401
from darec.cli import data  # noqa: F401
from darec.cli.app import app

__all__ = ["app"]
