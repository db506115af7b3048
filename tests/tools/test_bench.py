"""The benchmark's render part runs on the shipped templates (a smoke test, no timing asserted)."""

from __future__ import annotations

from loyalflow.runtime import Runtime
from loyalflow.settings import Settings
from tools.bench_pipeline import bench_render


def test_bench_render_renders_every_kind(settings: Settings) -> None:
    rates = bench_render(Runtime(settings), 3)
    assert set(rates) == {
        "jinja_compiled_once_per_s",
        "jinja_from_string_each_per_s",
        "loyalflow_email_message_per_s",
        "loyalflow_sms_message_per_s",
    }
    assert all(rate > 0 for rate in rates.values())
