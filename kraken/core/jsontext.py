"""Compact JSON text (no spaces), from one encoder built once: ``json.dumps`` with
``separators`` builds a new encoder on every call, which shows on paths writing 100,000 nodes."""

from __future__ import annotations

import json

compact = json.JSONEncoder(separators=(",", ":")).encode
