"""python -m bench run | sweep | tables | floors (see bench/cli.py)."""
import sys

from bench.cli import main

sys.exit(main())
