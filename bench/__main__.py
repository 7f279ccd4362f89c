"""python -m bench main | run | sweep | tables | report | floors (see bench/cli.py)."""
import sys

from bench.cli import main

sys.exit(main())
