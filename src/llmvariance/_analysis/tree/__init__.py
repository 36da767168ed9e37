"""The divergence tree: where identical requests came apart, and how many samples went each way.

The distinct outputs, as token sequences, form a prefix tree whose agreeing stretches are
collapsed: every node is a stretch of text that all of its samples share, ending where
they split (a branch point) or where its one output ends (a leaf). The root is the prefix
shared by every sample, so its end is the report's ``common_prefix_tokens``.

``model`` holds the data, ``collect`` builds it from samples (mergeable, bounded),
``text`` draws it for a terminal.
"""

from .collect import DEFAULT_MAX_LEAVES, DivergenceTreeCollector, divergence_tree
from .model import DivergenceTree, TreeNode

__all__ = ["DEFAULT_MAX_LEAVES", "DivergenceTree", "DivergenceTreeCollector", "TreeNode",
           "divergence_tree"]
