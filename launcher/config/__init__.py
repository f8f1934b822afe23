"""Configuration: the typed schema registered in Hydra's ConfigStore, and composed config -> the values the
plan is built from.
"""
