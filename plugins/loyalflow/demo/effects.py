"""The demo's true effects: how much each message moves its recipients to book (docs/report.md).

The seeded guests book on their own (``demo/data.py``). On top of that, each recipient of a step
below who would not have booked anyway books with the step's probability, 1 to ``RESPONSE_DAYS``
days after the message (for a referral ask: a friend books with the guest's code). Holdout guests
get nothing, so the lift the report should recover for a step is ``effect × (1 − baseline)``, the
baseline being the share of the step's guests who book within the window on their own.
"""

from __future__ import annotations

import hashlib

# (campaign, step) -> probability that a recipient books because of the message
TRUE_EFFECTS: dict[tuple[str, str], float] = {
    ("thank_you", "thanks"): 0.02,  # a repeat booking (no holdout: not measurable, by design)
    ("remorse_reduction", "reassurance"): 0.03,
    ("remorse_reduction", "get_the_most"): 0.04,
    ("referral_ask", "ask"): 0.06,  # a friend books with the guest's referral code
    ("dormant_reactivation", "reminder"): 0.05,
    ("dormant_reactivation", "offer"): 0.08,
    ("dormant_reactivation", "why_stop"): 0.03,
    ("dormant_reactivation", "last_call"): 0.05,
    ("buying_cycle_nurture", "content"): 0.02,
}
RESPONSE_DAYS = 3  # a guest moved by a message books 1 to 3 days after it
ORDER_PREFIX = "SIM"  # order ids of the bookings the messages caused: SIM-<campaign>-<hash>


def draw(*parts: object) -> float:
    """A deterministic uniform number in [0, 1) from ``parts`` (same inputs, same number)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


def moved(campaign: str, step: str, customer_id: str, day: object) -> bool:
    """Whether this message moves this recipient to book (probability ``TRUE_EFFECTS``)."""
    return draw("effect", campaign, step, customer_id, day) < TRUE_EFFECTS.get((campaign, step), 0.0)


def lag_days(campaign: str, step: str, customer_id: str, day: object) -> int:
    """Days from the message to the booking it caused, 1 to ``RESPONSE_DAYS``."""
    return 1 + int(draw("lag", campaign, step, customer_id, day) * RESPONSE_DAYS)


def order_id(campaign: str, step: str, customer_id: str, day: object) -> str:
    """The caused booking's order id, stable across reruns."""
    digest = hashlib.sha256(f"{step}|{customer_id}|{day}".encode()).hexdigest()
    return f"{ORDER_PREFIX}-{campaign}-{digest[:12]}"


def expected_lift(effect: float, baseline: float) -> float:
    """The lift over the holdout a step with ``effect`` produces when ``baseline`` book anyway."""
    return effect * (1 - baseline)
