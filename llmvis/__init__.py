"""llmvis: see inside a causal language model while it generates."""

__version__ = "0.1.0"
