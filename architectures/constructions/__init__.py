"""Hand-set weights that prove what an architecture can express exactly."""
