"""What the launcher knows of Slurm itself: job states (sacct/squeue), the running job's view of itself
(scontrol), transient errors.
"""
