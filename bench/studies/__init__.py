"""How the findings were reached: chains of runs and the scripts that measured the solver's choices.

Each study's story is its findings page under docs/studies/."""
