"""Command-line tools over submitted jobs and sweeps: status, logs, cancel, resubmit, resume, report."""
