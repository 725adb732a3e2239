"""Serving: top-k recommendations from a run directory, in original ids."""

from darec.serve.recommender import Recommender, recommend

__all__ = ["Recommender", "recommend"]
