"""llmvis: see inside a causal language model while it generates.

    import llmvis
    run = llmvis.trace("Why is the sky blue?", temperature=0, max_new_tokens=32)
    run.tokens, run.attention(layer=3, head="mean"), run.token_probs(5), run.save("sky.llmvis")
    llmvis.load("sky.llmvis")

`import llmvis` stays cheap: torch, transformers and the model load only on first use.
"""

__version__ = "0.1.0"
__all__ = ["trace", "load", "Trace", "__version__"]


def __getattr__(name):
    if name in ("trace", "load", "Trace"):
        from . import pyapi

        return getattr(pyapi, name)
    raise AttributeError(f"module 'llmvis' has no attribute {name!r}")
