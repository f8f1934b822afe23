"""Sweeps (Hydra -m): one job per valid point, the sweep's manifest, resume."""
