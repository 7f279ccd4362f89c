"""The training library: a run's typed config, its train loop, its record on disk, and sweeps of runs."""
