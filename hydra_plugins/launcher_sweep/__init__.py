"""The launcher's Hydra plugins for sweeps (`python -m launcher -m ...`), found by Hydra's plugin scan of the
`hydra_plugins` namespace package; see plugins.py. conf/config.yaml selects them."""
