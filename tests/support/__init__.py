"""Test support: recorded-answer replay upstream, scriptable fake upstream, pytest fixtures.

Nothing here is part of the shipped package. The replay data comes from the public data folder
(see :func:`tests.support.recorded.shared_data_dir`), which tests and benchmarks may read but the
product never needs.
"""
