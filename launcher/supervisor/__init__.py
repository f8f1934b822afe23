"""The in-job supervisor: starts the components' steps, watches them, decides how the attempt ends,
requeues.
"""
