"""llmvis: see inside a causal language model while it generates.

    import llmvis
    run = llmvis.trace("Why is the sky blue?", temperature=0, max_new_tokens=32)
    run.tokens, run.attention(layer=3, head="mean"), run.token_probs(5), run.save("sky.llmvis")
    llmvis.load("sky.llmvis")

`import llmvis` stays cheap: torch, transformers and the model load only on first use.
"""

__version__ = "0.1.0"
__all__ = ["trace", "score", "score_many", "load", "patch", "Trace", "__version__"]


def trace(prompt=None, model="default", **options):
    """Generate from `prompt` and trace everything, as POST /api/generate does; see llmvis.pyapi.trace."""
    from llmvis import pyapi  # lazy: `import llmvis` and `llmvis.trace` must not load torch

    return pyapi.trace(prompt, model, **options)


def score(text, model="default", **options):
    """Score existing text (no generation) as a Trace; see llmvis.pyapi.score."""
    from llmvis import pyapi  # lazy, as above

    return pyapi.score(text, model, **options)


def score_many(texts, model="default", **options):
    """Score many texts with one model load: a list of dicts (or a DataFrame); see llmvis.pyapi.score_many."""
    from llmvis import pyapi  # lazy, as above

    return pyapi.score_many(texts, model, **options)


def load(path, model=None, device="auto", dtype="auto"):
    """Open a `.llmvis` bundle as a Trace; see llmvis.pyapi.load."""
    from llmvis import pyapi  # lazy, as above

    return pyapi.load(path, model, device, dtype)


def patch(clean, corrupted, metric, **options):
    """An activation patching sweep between a clean and a corrupted Trace or text, as POST
    /api/intervene/patch answers it; see llmvis.pyapi.patch."""
    from llmvis import pyapi  # lazy, as above

    return pyapi.patch(clean, corrupted, metric, **options)


def __getattr__(name):
    if name == "Trace":
        from llmvis import pyapi  # lazy, as above

        return pyapi.Trace
    raise AttributeError(f"module 'llmvis' has no attribute {name!r}")
