"""Prometheus exporter for Cloudflare AI Gateway billing."""

__version__ = "0.1.0"
