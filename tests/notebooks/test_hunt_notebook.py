"""notebooks/hunt.ipynb, executed on the venv's own kernel over a demo store.

The notebook hunts from raw events; its findings must name exactly the bypass
and token incidents the demo injected, with the request ids the detectors
independently put in their alerts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import orjson
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
HUNT_RULES = {"gateway_bypass", "token_replay", "token_expired_accepted", "token_revoked_used", "token_cross_org"}


def run_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, config: Path) -> Any:
    # A kernelspec of this interpreter first on JUPYTER_PATH: "python3" is the venv, whatever else is installed.
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "gatewatch venv", "language": "python"}  # fmt: skip
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("GATEWATCH_STORE", store)
    monkeypatch.setenv("GATEWATCH_CONFIG", str(config))
    notebook = nbformat.read(REPO / "notebooks" / "hunt.ipynb", as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=600,
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()  # fmt: skip
    return notebook


def findings(notebook: Any) -> dict[str, Any]:
    (cell,) = [c for c in notebook.cells if "findings" in c.metadata.get("tags", [])]
    text = "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == "stdout")
    return json.loads(text)


def test_hunt_notebook_finds_the_injected_incidents_from_raw_events(
    demo_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = run_notebook(tmp_path, monkeypatch, f"duckdb:{demo_out / 'gatewatch.duckdb'}", demo_out / "gatewatch.yaml")
    found = findings(notebook)
    assert Path(found["kernel"]).resolve() == Path(sys.executable).resolve()

    expected = orjson.loads((demo_out / "expected.json").read_bytes())
    injected = {(i["rule"], i["entity_type"], i["entity_value"], i.get("reason"))
                for i in expected["injections"] if i["required"] and i["rule"] in HUNT_RULES}  # fmt: skip
    hunted = {(i["rule"], i["entity_type"], i["entity_value"], i["reason"]) for i in found["incidents"]}
    assert hunted == injected

    # The detectors' evidence (from the alerts file) against the notebook's, found the other way.
    alerts = {(a["rule"], a["entity"]["type"], a["entity"]["value"]): a
              for a in map(orjson.loads, (demo_out / "alerts.ndjson").read_bytes().splitlines())}  # fmt: skip
    for incident in found["incidents"]:
        alert = alerts[(incident["rule"], incident["entity_type"], incident["entity_value"])]
        if incident["rule"] == "token_replay":
            # The alert names the uses that made it a replay; the notebook lists every use of the token.
            assert set(alert["request_ids"]) < set(incident["request_ids"])
        else:
            assert set(incident["request_ids"]) == set(alert["request_ids"]), incident["rule"]
    made_up = {f"00000000-0000-4000-8000-{i:012d}" for i in range(1, 13)}  # gateway_bypass untrusted_peer
    assert any(set(i["request_ids"]) == made_up for i in found["incidents"])

    assert set(found["timeline"]["sides"]) == {"gateway", "billing"}
    assert {"billing_charges", "billing_customers", "billing_invoices"} <= set(found["routes"])
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the rates per route and the request's timeline


def test_hunt_notebook_runs_on_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GATEWATCH_STORE points it at any store: one without a token replay (here, without anything) must not crash it.
    from ingest.sinks.duckdb import DuckDBSink

    store = tmp_path / "empty.duckdb"
    DuckDBSink(store).close()
    config = tmp_path / "gatewatch.yaml"
    config.write_text("store: {url: none}\n")
    found = findings(run_notebook(tmp_path, monkeypatch, f"duckdb:{store}", config))
    assert (found["events"], found["incidents"], found["routes"]) == (0, [], [])
    assert found["timeline"] == {"request_id": None, "client": None, "sides": []}
