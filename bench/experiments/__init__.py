"""Scripts that write results/: each is a subcommand of `python -m bench`."""
