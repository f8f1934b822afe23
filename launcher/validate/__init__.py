"""Validation before anything is queued: problem types, the facts gathered about the cluster, sbatch option
tables, rules by topic.
"""
