"""Text normalisation, hashing and masking. Pure functions, no heavy imports."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WS = re.compile(r"\s+")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)")
_PHONE = re.compile(r"(?<!\d)(?:\+?\d{1,3}[ -]?)?(?:1[3-9]\d{9}|\d{3,4}[ -]?\d{7,8}|\d{3}[ -]\d{3}[ -]\d{4})(?!\d)")


def normalize_text(text: str) -> str:
    """NFKC-normalise and collapse whitespace, so visually equal texts hash equally."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def text_hash(normalized: str) -> str:
    """Stable 16-byte hex digest of an already normalised text."""
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).hexdigest()


def mask_pii(text: str) -> str:
    """Mask URLs, card numbers and phone numbers for previews in the UI."""
    text = _URL.sub("<URL>", text)
    text = _CARD.sub("<CARD>", text)
    return _PHONE.sub("<PHONE>", text)
