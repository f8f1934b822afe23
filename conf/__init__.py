# Makes conf/ importable as `launcher.conf` (pyproject maps it), so the configs ship in the wheel
# and Hydra finds them through `pkg://launcher.conf` from any install.
