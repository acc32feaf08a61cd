"""Claims declared before the run, tested with statistics that fit few, bimodal, paired seeds."""
