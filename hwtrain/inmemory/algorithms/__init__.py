"""Per-layer in-memory update rules: each owns its array(s) and turns (x, grad) into device pulses."""
