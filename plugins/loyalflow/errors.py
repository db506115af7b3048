"""Errors that name the file, field or customer at fault, on one line."""

from __future__ import annotations

from collections.abc import Mapping


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


class SettingsError(LoyalflowError):
    """A ``LOYALFLOW_*`` setting (or the command-line option that overrides it) is invalid."""

    @classmethod
    def from_validation(cls, exc: Exception, names: Mapping[str, str] | None = None) -> SettingsError:
        """One line from a pydantic ``ValidationError`` of ``Settings``: each bad setting, named.

        A field is named by its variable (``LOYALFLOW_<FIELD>``) unless ``names`` says otherwise (e.g. a
        command-line option that overrode it). Values of keys and secrets are never repeated.
        """
        problems = []
        for error in getattr(exc, "errors", list)():
            field = ".".join(str(part) for part in error.get("loc", ())) or "settings"
            name = (names or {}).get(field) or f"LOYALFLOW_{field.upper()}"
            value, secret = error.get("input"), any(w in field for w in ("key", "secret", "password"))
            got = f" (got {value!r})" if isinstance(value, str | int | float) and not secret else ""
            problems.append(f"{name}: {error.get('msg', 'invalid')}{got}")
        problems = problems or [str(exc).splitlines()[0]]
        return cls(f"invalid setting{'s' if len(problems) > 1 else ''}: " + "; ".join(problems))


class ConnectionSetupError(LoyalflowError):
    """An Airflow Connection is missing, incomplete or unsafe (names the Connection id)."""


class InsecureConnectionError(ConnectionSetupError):
    """A Connection would send credentials over an unencrypted channel to a host that is not loopback."""


class DatabaseError(LoyalflowError):
    """A warehouse or state database URL is malformed, its driver is missing, or it cannot be reached."""
