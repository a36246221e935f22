"""Demo traffic: seeded Envoy/Ambassador access logs and Billing app logs with injected attacks.

- :func:`generate` — ``("gateway" | "app", record)`` pairs in delivery order;
- :func:`scenario` — what a run contains: injections, benign look-alikes, revocations;
- :func:`write_demo` — a run on disk with its pipeline config and expectations;
- :func:`render_text` / :func:`render_json` — gateway records as Envoy writes them.

Everything is deterministic for a seed.
"""

from gatewatch.demo.files import DemoExpected, DemoFiles, write_demo
from gatewatch.demo.render import (
    DEMO_JSON_FORMAT,
    DEMO_TEXT_FORMAT,
    ENVOY_DEFAULT_FORMAT,
    GATEWAY_OPERATORS,
    compile_json,
    compile_text,
    render_json,
    render_text,
)
from gatewatch.demo.scenario import RULES, Injection, LookAlike, Revocation, Scenario
from gatewatch.demo.traffic import generate, injections, run, scenario
from gatewatch.demo.world import DEFAULT_START

__all__ = [
    "DEFAULT_START",
    "DEMO_JSON_FORMAT",
    "DEMO_TEXT_FORMAT",
    "ENVOY_DEFAULT_FORMAT",
    "GATEWAY_OPERATORS",
    "RULES",
    "DemoExpected",
    "DemoFiles",
    "Injection",
    "LookAlike",
    "Revocation",
    "Scenario",
    "compile_json",
    "compile_text",
    "generate",
    "injections",
    "render_json",
    "render_text",
    "run",
    "scenario",
    "write_demo",
]
