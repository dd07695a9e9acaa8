"""OpenAPI 3 description of the v1 API, served at /api/openapi.json.

tests/api/test_openapi.py keeps it in step with the code: every /api route is described, every
described route exists, and every documented parameter is validated by its route.
"""
from __future__ import annotations

from llmvis import __version__
from llmvis.core.segments import SEGMENTS

ERROR = {"$ref": "#/components/schemas/Error"}


def _q(name: str, schema: dict, required: bool = False, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _resp(ok_schema: dict, *codes: int, ok_type: str = "application/json") -> dict:
    out = {"200": {"description": "OK", "content": {ok_type: {"schema": ok_schema}}}}
    for code in codes:
        out[str(code)] = {"description": "error", "content": {"application/json": {"schema": ERROR}}}
    return out


RUN_ID = _q("run_id", {"type": "string", "maxLength": 64}, True, "id returned by /api/generate")
EXPLAIN_PARAMS = [
    RUN_ID,
    _q("position", {"type": "integer", "minimum": 1}, True, "the token explained, predicted from the state at position - 1"),
    _q("target", {"type": "integer", "minimum": 0}, description="token id to explain (default: the token at position)"),
    _q("contrast", {"type": "integer", "minimum": 0}, description="explain logit[target] - logit[contrast]"),
]
GENERATE_BODY = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "description": "user message (or use messages)"},
        "messages": {
            "type": "array", "minItems": 1,
            "items": {"type": "object", "required": ["role", "content"], "properties": {
                "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                "content": {"type": "string"}}},
        },
        "system": {"type": "string"},
        "use_chat_template": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 100, "default": 0.7},
        "top_k": {"type": "integer", "minimum": 0, "default": 50},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.95},
        "max_new_tokens": {"type": "integer", "minimum": 1, "default": 128},
        "seed": {"type": "integer", "minimum": 0},
    },
}
TOKEN = {
    "type": "object",
    "required": ["position", "id", "text", "source", "prob", "rank", "entropy", "sample_prob"],
    "properties": {
        "position": {"type": "integer"}, "id": {"type": "integer"}, "text": {"type": "string"},
        "source": {"type": "string", "enum": ["prompt", "generated"]},
        "prob": {"type": ["number", "null"]}, "rank": {"type": ["integer", "null"]},
        "entropy": {"type": ["number", "null"]}, "sample_prob": {"type": ["number", "null"]},
        "sample_entropy": {"type": ["number", "null"]}, "cut_mass": {"type": ["number", "null"]},
        "special": {"type": "boolean"}, "bytes": {"type": "string"}, "partial": {"type": "boolean"},
        "segment": {"type": "string", "enum": list(SEGMENTS)},
    },
}
RUN = {
    "type": "object",
    "required": ["run_id", "model", "params", "tokens", "generated_text", "finish_reason", "timing"],
    "properties": {
        "run_id": {"type": "string"}, "model": {"$ref": "#/components/schemas/Model"},
        "params": {"type": "object"}, "tokens": {"type": "array", "items": TOKEN},
        "generated_text": {"type": "string"},
        "finish_reason": {"type": "string", "enum": ["eos", "length", "cancelled", "scored"]},
        "status": {"type": "string", "enum": ["done", "cancelled"]},
        "timing": {"type": "object", "properties": {
            "generate_s": {"type": "number"}, "tokens_per_s": {"type": ["number", "null"]},
            "analysis_s": {"type": "number"}}},
        "num_prompt_tokens": {"type": "integer"}, "num_tokens": {"type": "integer"},
    },
}

PATHS = {
    "/api/model": {"get": {"summary": "Model info and server limits", "parameters": [],
                           "responses": _resp({"$ref": "#/components/schemas/Model"})}},
    "/api/generate": {"post": {
        "summary": "Generate and trace a run",
        "requestBody": {"required": True, "content": {"application/json": {"schema": GENERATE_BODY}}},
        "responses": _resp(RUN, 400, 413, 500, 503),
    }},
    "/api/estimate": {"post": {
        "summary": "Estimate the memory of a generation with this body (nothing is generated)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": GENERATE_BODY}}},
        "responses": _resp({"type": "object", "required": ["num_tokens", "run_bytes", "peak_bytes", "fits"], "properties": {
            "run_bytes": {"type": "integer", "description": "what the run store will hold for the run (hidden states, "
                          "the pre-norm last state, step statistics), before any view is cached"},
            "kv_cache_bytes": {"type": "integer", "description": "the KV cache while decoding"},
            "attention_layer_bytes": {"type": "integer", "description": "one cached attention view: a (T, T) float32 "
                                      "matrix for one (layer, head) or head reduction"},
            "attention_cache_bytes": {"type": "integer", "description": "the most attention views one run caches"},
            "peak_bytes": {"type": "integer", "description": "the run plus the larger of the generation's and an "
                           "attention view's transient memory"},
        }}, 400),
    }},
    "/api/generate/stream": {"post": {
        "summary": "Generate with Server-Sent Events: start, prompt, token..., done | error",
        "requestBody": {"required": True, "content": {"application/json": {"schema": GENERATE_BODY}}},
        "responses": _resp({"type": "string"}, 400, 413, 503, ok_type="text/event-stream"),
    }},
    "/api/fork": {"post": {
        "summary": "Regenerate from a position with a chosen token forced there (a new run linked to its parent)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["run_id", "position", "token_id"], "properties": {
                "run_id": {"type": "string"}, "position": {"type": "integer", "minimum": 1},
                "token_id": {"type": "integer", "minimum": 0},
                "temperature": {"type": "number"}, "top_k": {"type": "integer"}, "top_p": {"type": "number"},
                "max_new_tokens": {"type": "integer"}, "seed": {"type": "integer"}}}}}},
        "responses": _resp(RUN, 400, 404, 409, 500, 503),
    }},
    "/api/fork/stream": {"post": {
        "summary": "A fork (the body of /api/fork) streamed as Server-Sent Events: start, prompt, token..., done | error",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["run_id", "position", "token_id"]}}}},
        "responses": _resp({"type": "string"}, 400, 404, 409, 413, 503, ok_type="text/event-stream"),
    }},
    "/api/score": {"post": {
        "summary": "Score text without generating: per-token prob/rank, perplexity, GLTR buckets",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["text"], "properties": {
                "text": {"type": "string", "minLength": 1}, "system": {"type": "string"},
                "use_chat_template": {"type": "boolean", "default": False}}}}}},
        "responses": _resp(RUN, 400, 413, 503),
    }},
    "/api/diff": {"get": {
        "summary": "Align two runs token by token, mark the divergence, KL per position",
        "parameters": [_q("run_a", {"type": "string"}, True), _q("run_b", {"type": "string"}, True),
                       _q("align", {"type": "string", "enum": ["position", "edit", "auto"], "default": "position"},
                          description="position by position, or token edit distance after the common prefix")],
        "responses": _resp({"type": "object"}, 400, 404, 409),
    }},
    "/api/cancel": {"post": {
        "summary": "Cancel a queued or running generation",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["run_id"], "properties": {"run_id": {"type": "string"}}}}}},
        "responses": _resp({"type": "object"}, 400, 404),
    }},
    "/api/run": {"get": {"summary": "A stored run, as /api/generate returned it", "parameters": [RUN_ID],
                         "responses": _resp(RUN, 400, 404, 409)}},
    "/api/token_probs": {"get": {
        "summary": "Top-N alternatives at one position",
        "parameters": [RUN_ID, _q("position", {"type": "integer", "minimum": 1}, True),
                       _q("top_n", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10})],
        "responses": _resp({"type": "object"}, 400, 404, 409),
    }},
    "/api/attention": {"get": {
        "summary": "Attention of one layer: one head, mean, max or all heads; JSON or float16; pooled or windowed",
        "parameters": [
            RUN_ID, _q("layer", {"type": "integer", "minimum": 0}, True),
            _q("head", {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "enum": ["mean", "max", "all"]}]},
               description="all: every query head, (heads, rows, cols); with format=f16 the X-Llmvis-Heads header gives heads"),
            _q("format", {"type": "string", "enum": ["json", "f16"], "default": "json"}),
            _q("pool", {"type": "integer", "minimum": 0, "maximum": 8192}, description="0 or >= 16"),
            _q("pool_mode", {"type": "string", "enum": ["max", "mean"], "default": "max"}),
            _q("q_start", {"type": "integer", "minimum": 0}), _q("q_end", {"type": "integer", "minimum": 0}),
            _q("k_start", {"type": "integer", "minimum": 0}), _q("k_end", {"type": "integer", "minimum": 0}),
        ],
        "responses": _resp({"type": "object"}, 400, 404, 409, 413, 503),
    }},
    "/api/hidden_similarity": {"get": {"summary": "Cosine similarity of consecutive layers",
                                       "parameters": [RUN_ID], "responses": _resp({"type": "object"}, 400, 404, 409)}},
    "/api/embedding_projection": {"get": {
        "summary": "2D PCA of one layer's token states",
        "parameters": [RUN_ID, _q("layer", {"type": "integer", "minimum": 0}),
                       _q("method", {"type": "string", "enum": ["pca"], "default": "pca"}),
                       _q("include_first", {"type": "string", "enum": ["0", "1"], "default": "0"},
                          description="1 = let position 0 (an attention sink) shape the components")],
        "responses": _resp({"type": "object"}, 400, 404, 409),
    }},
    "/api/logit_lens": {"get": {
        "summary": "Logit lens: each layer's top tokens at each position, the next token's prob/rank, entropy",
        "parameters": [RUN_ID, _q("top_k", {"type": "integer", "minimum": 1, "maximum": 20, "default": 5}),
                       _q("start", {"type": "integer", "minimum": 0, "default": 0}),
                       _q("end", {"type": "integer", "minimum": 1}),
                       _q("job_id", {"type": "string", "pattern": "^[0-9a-f]{8,32}$"}, False,
                          "name the range as a job: follow it at /api/jobs/{job_id}, stop it with POST /api/cancel")],
        "responses": _resp({"type": "object"}, 400, 404, 409, 503),
    }},
    "/api/jobs/{job_id}": {"get": {
        "summary": "Progress of a named view job (a logit-lens range): done of total positions, status",
        "parameters": [{"name": "job_id", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{8,32}$"}}],
        "responses": _resp({"type": "object", "required": ["job_id", "done", "total", "status"]}, 400, 404),
    }},
    "/api/attention_insights": {"get": {
        "summary": "Per layer and query head: attention entropy, sink share, previous-token share; KV groups",
        "parameters": [RUN_ID], "responses": _resp({"type": "object"}, 400, 404, 409),
    }},
    "/api/attention_row": {"get": {
        "summary": "One query position's attention to earlier tokens in every layer (mean, max or one head)",
        "parameters": [RUN_ID, _q("position", {"type": "integer", "minimum": 0}, True),
                       _q("head", {"oneOf": [{"type": "integer", "minimum": 0},
                                             {"type": "string", "enum": ["mean", "max"]}]})],
        "responses": _resp({"type": "object"}, 400, 404, 409),
    }},
    "/api/segments": {"get": {
        "summary": "Chat segments (system, user, assistant, think, template) and attention/entropy per segment",
        "parameters": [RUN_ID, _q("attention", {"type": "string", "enum": ["0", "1"], "default": "1"},
                                  description="0 = segments only, no attention statistics")],
        "responses": _resp({"type": "object"}, 400, 404, 409),
    }},
    "/api/explain/logit": {"get": {
        "summary": "Direct logit attribution of one token to the embedding, each query head, each output bias "
                   "and each MLP, read through the final norm at the query row's fixed scale (docs/EXPLAIN.md)",
        "parameters": EXPLAIN_PARAMS,
        "responses": _resp({"type": "object", "required": ["logit", "embedding", "heads", "o_bias", "attention", "mlp",
                                                            "total", "gap", "softcap", "target", "contrast"]},
                           400, 404, 409, 503),
    }},
    "/api/explain/inputs": {"get": {
        "summary": "Input attribution of one prediction over the tokens 0..position-1: gradient x input, "
                   "integrated gradients (with completeness), value-norm attention or the direct logit part per source",
        "parameters": EXPLAIN_PARAMS + [
            _q("method", {"type": "string", "enum": ["grad_x_input", "integrated_gradients", "value_norm", "direct"],
                          "default": "grad_x_input"}),
            _q("steps", {"type": "integer", "minimum": 1, "maximum": 128, "default": 16},
               description="integrated-gradients steps"),
            _q("job_id", {"type": "string", "maxLength": 64},
               description="run the gradient methods as a named job: GET /api/jobs/{job_id}, POST /api/cancel"),
        ],
        "responses": _resp({"type": "object", "required": ["method", "scores", "tokens"]}, 400, 404, 409, 503),
    }},
    "/api/explain/flow": {"get": {
        "summary": "Information-flow graph of one prediction: (layer, position) nodes, attention / residual / MLP "
                   "edges normalised per receiving node, pruned at threshold",
        "parameters": [RUN_ID, _q("position", {"type": "integer", "minimum": 1}, True),
                       _q("threshold", {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.05})],
        "responses": _resp({"type": "object", "required": ["nodes", "edges", "tokens"]}, 400, 404, 409, 503),
    }},
    "/api/openapi.json": {"get": {"summary": "This document", "parameters": [],
                                  "responses": _resp({"type": "object"})}},
}

# ---- keeping runs (routes_history.py) ----------------------------------------------------------
RUN_ID_PATH = {"name": "run_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[0-9a-f]{8,32}$"}, "description": "a run id (hex)"}
PATHS.update({
    "/api/history": {"get": {
        "summary": "Saved runs, newest first (empty with enabled=false when history is off)",
        "parameters": [_q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                       _q("offset", {"type": "integer", "minimum": 0, "default": 0})],
        "responses": _resp({"type": "object"}, 400),
    }},
    "/api/history/{run_id}": {
        "patch": {"summary": "Rename a saved run", "parameters": [RUN_ID_PATH],
                  "requestBody": {"required": True, "content": {"application/json": {"schema": {
                      "type": "object", "required": ["title"],
                      "properties": {"title": {"type": "string", "minLength": 1, "maxLength": 200}}}}}},
                  "responses": _resp({"type": "object"}, 400, 404)},
        "delete": {"summary": "Delete a saved run (from the history and from memory)", "parameters": [RUN_ID_PATH],
                   "responses": _resp({"type": "object"}, 400, 404)},
    },
    "/api/runs/{run_id}/export": {"get": {
        "summary": "The run as one .llmvis bundle (safetensors tensors + JSON metadata)",
        "parameters": [RUN_ID_PATH],
        "responses": _resp({"type": "string", "format": "binary"}, 400, 404, 409, ok_type="application/octet-stream"),
    }},
    "/api/runs/{run_id}/share": {"get": {
        "summary": "One self-contained HTML file that shows the run with no server",
        "parameters": [RUN_ID_PATH, _q("layers", {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"},
                                       description="attention layers to embed (default: first, middle, last; at most 8)")],
        "responses": _resp({"type": "string"}, 400, 404, 409, ok_type="text/html"),
    }},
    "/api/import": {"post": {
        "summary": "Import a .llmvis bundle (multipart field `file`, or the raw body); own size cap, --max-import-mb",
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": _resp(RUN, 400, 413),
    }},
})

# ---- interventions (routes_intervene.py; docs/INTERVENE.md) -------------------------------------
def _body(required: list[str], props: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": required, "properties": props}}}}


TARGET = {"type": "object", "required": ["kind", "layer"], "properties": {
    "kind": {"type": "string", "enum": ["head", "kv_group", "mlp", "attention"]},
    "layer": {"type": "integer", "minimum": 0}, "head": {"type": "integer", "minimum": 0},
    "group": {"type": "integer", "minimum": 0}}}
PAIR_SIDE = {"type": "object", "properties": {"run_id": {"type": "string"}, "text": {"type": "string", "minLength": 1}},
             "description": "exactly one of run_id or text"}
PATHS.update({
    "/api/tokenize": {"post": {
        "summary": "Token ids, texts and count of a text (as the patching texts are tokenized)",
        "requestBody": _body(["text"], {"text": {"type": "string", "minLength": 1}, "use_chat_template": {"type": "boolean"},
                                        "system": {"type": "string"}}),
        "responses": _resp({"type": "object", "required": ["ids", "tokens", "count"]}, 400, 415),
    }},
    "/api/intervene/ablate": {"post": {
        "summary": "Re-run a run with query heads, KV groups, MLPs or attention layers zeroed or mean-ablated "
                   "(teacher-forced, or free); a linked run of kind intervention and its effects",
        "requestBody": _body(["run_id", "targets"], {
            "run_id": {"type": "string"}, "targets": {"type": "array", "minItems": 1, "maxItems": 64, "items": TARGET},
            "mode": {"type": "string", "enum": ["zero", "mean"], "default": "zero"},
            "free": {"type": "boolean", "default": False}}),
        "responses": _resp({"type": "object", "required": ["run", "effects"]}, 400, 404, 409, 503),
    }},
    "/api/intervene/steer": {"post": {
        "summary": "Generate with alpha * v added to the residual stream at a layer (one linked run per alpha)",
        "requestBody": _body(["run_id", "layer", "vector"], {
            "run_id": {"type": "string"}, "layer": {"type": "integer", "minimum": 0},
            "alpha": {"type": "number"}, "alphas": {"type": "array", "minItems": 1, "maxItems": 8, "items": {"type": "number"}},
            "from_position": {"type": "integer", "minimum": 0}, "free": {"type": "boolean", "default": True},
            "normalize": {"type": "boolean", "default": False},
            "vector": {"type": "object", "required": ["source"], "properties": {
                "source": {"type": "string", "enum": ["mean_diff", "token", "raw"]},
                "positive": {"type": "array", "items": {"type": "string"}},
                "negative": {"type": "array", "items": {"type": "string"}},
                "token_id": {"type": "integer"}, "token": {"type": "string"},
                "values": {"type": "array", "items": {"type": "number"}}}}}),
        "responses": _resp({"type": "object", "required": ["vector", "results"]}, 400, 404, 409, 503),
    }},
    "/api/intervene/effects": {"get": {
        "summary": "Per position of an intervention run: the parent token's log-prob change and KL(parent || intervened)",
        "parameters": [RUN_ID, _q("align", {"type": "string", "enum": ["auto", "position", "edit"], "default": "auto"}),
                       _q("top", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                          description="how many of the most affected positions the summary lists")],
        "responses": _resp({"type": "object"}, 400, 404, 409),
    }},
    "/api/intervene/patch": {"post": {
        "summary": "Activation patching sweep (residual stream per layer and position, or each head per layer); "
                   "a job with progress at /api/jobs/{job_id} when job_id is given",
        "requestBody": _body(["clean", "corrupted", "metric"], {
            "clean": PAIR_SIDE, "corrupted": PAIR_SIDE, "use_chat_template": {"type": "boolean", "default": False},
            "metric": {"type": "object", "required": ["type"], "properties": {
                "type": {"type": "string", "enum": ["logit_diff", "logprob"]}, "position": {"type": "integer"},
                "token_a": {"type": ["integer", "string"]}, "token_b": {"type": ["integer", "string"]},
                "token": {"type": ["integer", "string"]}}},
            "sweep": {"type": "string", "enum": ["residual", "heads"], "default": "residual"},
            "head_position": {"type": ["string", "integer"], "description": "all, or one position (heads sweep)"},
            "job_id": {"type": "string", "pattern": "^[0-9a-f]{8,32}$"}}),
        "responses": _resp({"type": "object"}, 400, 404, 409, 503),
    }},
})


def spec() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "llmvis API", "version": __version__,
                 "description": "See inside a causal LM while it generates. Errors: {error, status}."},
        "paths": PATHS,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "status"], "properties": {
                "error": {"type": "string"}, "status": {"type": "integer"}, "run_id": {"type": "string"}}},
            "Model": {"type": "object", "required": ["name", "architecture", "num_layers", "num_heads",
                                                     "num_kv_heads", "hidden_size", "vocab_size", "device", "dtype"]},
        }},
    }
