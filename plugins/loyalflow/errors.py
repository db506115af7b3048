"""Errors that name the file, field or customer at fault, on one line."""

from __future__ import annotations


class LoyalflowError(Exception):
    """Base class: a problem a user can act on, with a one-line message."""


class CampaignError(LoyalflowError):
    """A campaign file, its SQL or its templates are invalid."""

    def __init__(self, file: str, message: str, field: str | None = None, line: int | None = None):
        self.file, self.field, self.line, self.message = file, field, line, message
        where = file + (f":{line}" if line else "")
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")


class SegmentError(LoyalflowError):
    """A segment query failed or returned the wrong shape."""


class RenderError(LoyalflowError):
    """A template could not be rendered for a customer."""
