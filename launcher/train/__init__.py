"""The trainer entry point (python -m launcher.train): job loading, data, the launcher's callback, training,
preflight. The only place besides the server that imports torch/TRL.
"""
