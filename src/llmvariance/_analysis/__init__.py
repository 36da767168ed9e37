"""Reading the outputs: metrics, collectors, the report, the divergence tree, answers.

Everything here is a pure function of samples (or of the collectors' per-output entries):
nothing opens a socket, and the pool never imports from here.
"""
