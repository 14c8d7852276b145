"""Every registered collector, one fixture each: what the registry promises about a collector module holds, so
that adding an endpoint is one module and one registry line."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from exporter.collectors import NAMES, REGISTRY
from exporter.collectors.base import Collector
from exporter.config.load import default_collectors
from exporter.config.model import Config
from exporter.demo import ROUTES
from exporter.samples import DEMO_ACCOUNTS
from tests.support import REPO

CONFIG = Config(collectors=default_collectors())


@pytest.fixture(params=REGISTRY, ids=lambda c: c.name)
def collector(request: pytest.FixtureRequest) -> type[Collector[Any, Any]]:
    found: type[Collector[Any, Any]] = request.param
    return found


def test_the_registry_is_one_line_per_module() -> None:
    assert [c.name for c in REGISTRY] == list(NAMES) and len(set(NAMES)) == len(NAMES)
    modules = {p.stem for p in (REPO / "exporter" / "collectors").glob("*.py") if not p.stem.startswith("_")}
    assert modules - {"base", "cells"} == set(NAMES), "a collector module missing from the registry, or the reverse"


def test_families_are_prefixed_documented_and_unique(collector: type[Collector[Any, Any]]) -> None:
    families = collector(CONFIG.collectors[collector.name], CONFIG).families
    assert families, f"{collector.name} exports nothing"
    for family in families:
        assert family.name.startswith("cloudflare_ai_gateway_") and family.doc.strip()
        assert family.labels[:2] == ("account_id", "account") and family.type in ("gauge", "counter")
        # Prometheus' base units (promtool check metrics refuses the others): seconds, bytes, not minutes or kB
        words = family.name.split("_")
        assert not {"minutes", "hours", "days", "milliseconds", "kilobytes", "megabytes"} & set(words), family.name
    others = {f.name for c in REGISTRY if c is not collector for f in c(CONFIG.collectors[c.name], CONFIG).families}
    assert not {f.name for f in families} & others


def test_it_has_a_title_a_setting_per_key_and_a_section_in_the_docs(collector: type[Collector[Any, Any]]) -> None:
    assert collector.title and collector.settings_type.__doc__ is not None
    for key in dataclasses.fields(collector.settings_type):
        assert "parse" in key.metadata and key.metadata["doc"], f"{collector.name}.{key.name}"
    billing = (REPO / "docs" / "billing.md").read_text()
    assert f"`{collector.name}`" in billing and f"`{collector.name}`" in (REPO / "README.md").read_text()


def test_its_sample_answers_every_sample_account(collector: type[Collector[Any, Any]]) -> None:
    """The demo and the test fake answer from each collector's own sample data, in the API's wire format."""
    assert collector.routes, f"{collector.name} has no sample route"
    for route in collector.routes:
        assert ROUTES[route.path] == (collector, route)
    for account_id in DEMO_ACCOUNTS.values():
        sample = collector.sample(account_id, 1_796_000_000.0, 1_796_000_000.0)
        assert dataclasses.is_dataclass(sample) and not isinstance(sample, type)
        kind: Any = type(sample)
        assert kind() is not None, "its default is an account that does not use the feature"
