"""The Plan: a pure, validated, printable description of the job, its component commands, and its renderings
(plan text, sbatch script).
"""
