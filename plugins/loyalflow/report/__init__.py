"""Proof of value: lift with intervals (``lift``), report.json (``build``), report.html (``html``)."""
