"""The OpenAPI description stays in step with the code."""
import re

import pytest

from llmvis.web.app import create_app
from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def app(default_lm):
    return create_app(Engine(default_lm, ServerConfig(max_new_tokens=4)))


def test_every_route_is_described_and_every_description_is_a_route(app):
    spec = app.test_client().get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule), m.lower())  # Flask <x> is OpenAPI {x}
              for r in app.url_map.iter_rules() if r.rule.startswith("/api/")
              for m in r.methods - {"HEAD", "OPTIONS"}}
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == described


def test_every_documented_query_parameter_is_validated(app):
    """A nonsense value for each documented parameter answers 400 naming that parameter."""
    client = app.test_client()
    run = client.post("/api/generate", json={"prompt": "Hi", "temperature": 0, "max_new_tokens": 2}).get_json()
    spec = client.get("/api/openapi.json").get_json()
    for path, ops in spec["paths"].items():
        params = ops.get("get", {}).get("parameters", [])
        valid = {"run_id": run["run_id"], "run_a": run["run_id"], "run_b": run["run_id"], "position": "1", "layer": "0"}
        for p in params:
            if p["name"] == "run_id" or p.get("in") == "path":
                continue
            query = {k: v for k, v in valid.items() if k in {q["name"] for q in params}}
            query[p["name"]] = "-5x"
            resp = client.get(path.replace("{run_id}", run["run_id"]), query_string=query)
            expected = 404 if p["name"] in ("run_a", "run_b") else 400  # run ids: "unknown run id"
            assert resp.status_code == expected, (path, p["name"], resp.get_json())
            assert p["name"] in resp.get_json()["error"], (path, p["name"], resp.get_json())


def test_documented_body_fields_are_validated(app):
    client = app.test_client()
    spec = client.get("/api/openapi.json").get_json()
    props = spec["paths"]["/api/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    for name in props:
        body = {"prompt": "Hi"} if name != "prompt" else {}
        body[name] = {"not": "valid"}
        resp = client.post("/api/generate", json=body)
        assert resp.status_code == 400 and name in resp.get_json()["error"], (name, resp.get_json())
