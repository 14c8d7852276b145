#!/usr/bin/env python3
"""Write deploy/kubernetes/base/prometheusrule.yaml from prometheus/alerts.yml.

The PrometheusRule (Prometheus Operator) carries exactly the rule groups of
prometheus/alerts.yml; tests/test_kubernetes.py fails when the two drift apart.

    python scripts/gen-prometheusrule.py           # rewrite the manifest
    python scripts/gen-prometheusrule.py --check   # exit 1 if it is out of date

Every alert's runbook_url is built from one setting, the `base_url` label of the recording rule
`cloudflare_ai_gateway:runbook` in prometheus/alerts.yml. To point the alerts at your own copy of the runbook
in a manifest of your own, without editing alerts.yml:

    python scripts/gen-prometheusrule.py --runbook-base-url https://wiki.example.com/runbook.md \
        --output my-prometheusrule.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "prometheus" / "alerts.yml"
OUTPUT = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from prometheus/alerts.yml by scripts/gen-prometheusrule.py: do not edit by hand.
# For the Prometheus Operator. If your Prometheus selects rules by label (e.g. the
# kube-prometheus-stack's `release: <name>`), add that label to metadata.labels.
# The recording rule cloudflare_ai_gateway_exporter:up expects job="cloudflare-ai-gateway",
# the name of the Service in service.yaml (a ServiceMonitor's job is its Service's name).
"""


class _Dumper(yaml.SafeDumper):
    """Block scalars for long or multi-line strings, so templated descriptions stay readable."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else ">" if len(data) > 100 and " " in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


RUNBOOK_RULE = "cloudflare_ai_gateway:runbook"


def set_runbook_base_url(groups: list[Any], base_url: str) -> None:
    """Set the base_url label of the runbook rule (exactly one must exist)."""
    rules = [r for g in groups for r in g["rules"] if r.get("record") == RUNBOOK_RULE]
    if len(rules) != 1:
        raise SystemExit(f"{ALERTS}: expected one recording rule {RUNBOOK_RULE}, found {len(rules)}")
    rules[0]["labels"]["base_url"] = base_url


def render(alerts_text: str, runbook_base_url: str | None = None) -> str:
    alerts: Any = yaml.safe_load(alerts_text)
    if not isinstance(alerts, dict) or not isinstance(alerts.get("groups"), list):
        raise SystemExit(f"{ALERTS}: no `groups` list")
    if runbook_base_url is not None:
        set_runbook_base_url(alerts["groups"], runbook_base_url)
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "cloudflare-ai-gateway-exporter",
            "labels": {
                "app.kubernetes.io/name": "cloudflare-ai-gateway-exporter",
                "app.kubernetes.io/component": "exporter",
            },
        },
        "spec": {"groups": alerts["groups"]},
    }
    body = yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the manifest is out of date")
    parser.add_argument("--runbook-base-url", metavar="URL",
                        help="base of every alert's runbook_url (default: the one in alerts.yml)")
    parser.add_argument("--output", type=Path, default=OUTPUT, metavar="FILE",
                        help=f"where to write (default: {OUTPUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    output: Path = args.output.resolve()
    text = render(ALERTS.read_text(encoding="utf-8"), args.runbook_base_url)
    current = output.read_text(encoding="utf-8") if output.exists() else ""
    if args.check:
        if current != text:
            print(f"{output} is out of date: run scripts/gen-prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
