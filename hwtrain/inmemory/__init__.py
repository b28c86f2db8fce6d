"""In-memory training emulation: the weight update itself is done by device pulses on analog arrays.

Entry points: `run.train_inmemory` (used by `acompile train`) and `cli.sweep_cmd` (`acompile sweep`).
"""
