"""The job folder: every file name in it, and the typed readers and writers of each record."""
