"""The notebooks in examples/ run top to bottom through a real Jupyter kernel (nbclient +
ipykernel) on the default model, with no error, and show what they say they show."""
import ast
import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.model
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def execute(name: str):
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(EXAMPLES / name, as_version=4)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    return [c for c in book.cells if c.cell_type == "code"]


def outputs(cell, mime: str) -> str:
    return "".join(o.get("data", {}).get(mime, "") for o in cell.outputs if o.output_type == "execute_result")


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == ["01-tour.ipynb", "02-inside-the-layers.ipynb",
                                                                "03-batch-scoring.ipynb"]
    for path in EXAMPLES.glob("*.ipynb"):  # committed without outputs: they are made by running
        assert all(not c.get("outputs") for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


def test_the_tour_runs_and_renders_inline():
    cells = execute("01-tour.ipynb")
    assert 'class="llmvis-trace"' in outputs(cells[0], "text/html")  # the Trace rendered as chips
    assert "(9, " in outputs(cells[3], "text/plain")                  # every head of layer 5
    assert 'iframe class="llmvis-view"' in outputs(cells[4], "text/html")
    assert outputs(cells[5], "text/plain").strip()                    # the reopened run's text


def test_the_layers_notebook_runs():
    cells = execute("02-inside-the-layers.ipynb")
    assert "Paris" in outputs(cells[0], "text/plain")
    assert "first top-1 at layer" in outputs(cells[1], "text/plain")
    lens = outputs(cells[4], "text/html")  # the viewer inline, its srcdoc holding the lens
    assert 'iframe class="llmvis-view"' in lens and "&quot;lens&quot;:{&quot;start&quot;" in lens
    text, logit, parts = ast.literal_eval(outputs(cells[5], "text/plain"))  # explain a token
    assert "Paris" in text and abs(logit - parts) < 0.05  # the parts add up to the logit
    explain = outputs(cells[6], "text/html")
    assert 'iframe class="llmvis-view"' in explain and "&quot;explain&quot;:{&quot;position&quot;" in explain


def test_the_batch_notebook_runs():
    cells = execute("03-batch-scoring.ipynb")
    assert "top10" in outputs(cells[0], "text/plain")
    assert 'class="llmvis-trace"' in outputs(cells[2], "text/html")
