"""What people see while a job runs: the one-line status display, log following, tables."""
