"""What people look at: figures (matplotlib, the ``plot`` extra) and the HTML report.

``plot`` draws a report, a tree or an experiment's conditions; ``html`` writes one
self-contained page of them. Nothing here is imported until it is used, so the core
library never needs matplotlib.
"""
