"""The files: run files (a run's samples, crash-safe and resumable), suite files, DataFrames."""
