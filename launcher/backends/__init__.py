"""Backends: how a Plan becomes running processes. slurm: one heterogeneous sbatch through a submitit
executor; local: the same supervisor, components as processes on this machine.
"""
