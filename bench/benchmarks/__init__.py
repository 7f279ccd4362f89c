"""The pytest-benchmark modules that `pytest bench/` collects, and what they share."""
