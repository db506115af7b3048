"""The preference centre's languages: gettext catalogs read from ``.po`` files when first needed.

``web/locale/<lang>/LC_MESSAGES/messages.po`` is read with babel's ``read_po`` and turned into a gettext
``Translations`` object in memory, so there is no compiled ``.mo`` file and no build step. English is
the source language (the msgids). A customer's ``locale`` (``fr_FR``, ``fr-CA``, ``fr``) picks the
language; a language without a catalog falls back to English.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError, negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
SOURCE_LANGUAGE = "en"
DOMAIN = "messages"
log = logging.getLogger(__name__)


def available() -> tuple[str, ...]:
    """English plus every language with a catalog, e.g. ``("en", "fr")``."""
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return (SOURCE_LANGUAGE, *[lang for lang in found if lang != SOURCE_LANGUAGE])


@cache
def translations(lang: str) -> NullTranslations:
    """The gettext translations of ``lang`` (English: the msgids themselves)."""
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang == SOURCE_LANGUAGE or not path.is_file():
        return NullTranslations()
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=lang, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def language(locale: object) -> str:
    """The catalog language for a customer's ``locale`` (``fr_FR`` → ``fr``); English when unknown."""
    if not isinstance(locale, str) or not locale.strip():
        return SOURCE_LANGUAGE
    try:
        parsed = Locale.parse(locale.strip().replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return SOURCE_LANGUAGE
    return parsed.language if parsed.language in available() else SOURCE_LANGUAGE


def from_header(accept_language: str | None) -> str:
    """The best catalog language for an ``Accept-Language`` header (for pages without a customer)."""
    wanted: list[tuple[float, str]] = []
    for i, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*":
            wanted.append((quality - i * 1e-6, tag.replace("-", "_")))
    ordered: Iterable[str] = [tag for _, tag in sorted(wanted, reverse=True)]
    found = negotiate_locale(list(ordered), list(available()), sep="_")
    return language(found) if found else SOURCE_LANGUAGE
