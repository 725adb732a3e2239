"""Reliability checks, shared by the tests and ``bench/reliability.py``: fuzzing the data
readers, killing training and search at random moments, and damaging run directories."""
