"""Benchmarks: speed and memory, each against a baseline measured in the same run.

Each module here defines a Click command named ``command``; ``spyglass bench NAME``
runs it. Results are printed and, with ``--out FILE``, written as JSON for ``docs/``.
"""
