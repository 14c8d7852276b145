"""One collector per Cloudflare AI Gateway billing endpoint (see ``base.py`` for the interface)."""
