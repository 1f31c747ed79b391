"""Text normalisation, hashing and masking. Pure functions, no heavy imports."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import polars as pl

#: What counts as a link and as a phone number, for masking here and for the model's text statistics
#: (``has_url``, ``has_phone`` in :func:`fraud_assets.model.featurize.text_stats`). Written without
#: look-arounds so that polars' regex engine runs them too; case-insensitive.
URL_PATTERN = r"(?:https?://|www\.)\S+|\b[a-z0-9-]+\.(?:com|cn|net|org|cc|top|xyz|io|me|ly)\b"
#: A phone number: Chinese mobile, area code + number, or North-American style; optional country code.
#: Not glued to further digits (see :data:`PHONE_IN_TEXT` and ``_PHONE``).
PHONE_PATTERN = r"(?:\+?\d{1,3}[ -]?)?(?:1[3-9]\d{9}|\d{3,4}[ -]?\d{7,8}|\d{3}[ -]\d{3}[ -]\d{4})"
#: "The text contains a phone number", for engines without look-behind (polars).
PHONE_IN_TEXT = rf"(?:^|\D){PHONE_PATTERN}(?:\D|$)"

_WS = re.compile(r"\s+")
# Characters that render as nothing: soft hyphen, Arabic letter mark, Mongolian vowel separator and
# free variation selectors, zero-width space, direction marks, embeddings, overrides and isolates, word
# joiner and invisible operators, BOM, combining grapheme joiner, Khmer inherent vowels, Hangul fillers
# (NFKC turns U+3164 and U+FFA0 into U+1160), braille blank, variation selectors (emoji presentation
# and ideographic variants: the same character drawn another way) and tag characters.
# Removed, so that a text padded with them to slip past keyword filters hashes and reads like the
# plain text, and a text of nothing else is empty. ZWJ and ZWNJ stay inside a text: they shape
# emoji sequences (man, ZWJ, woman, ZWJ, girl: one family emoji) and Persian or Indic words; at
# either end they join nothing and are stripped with the spaces, so a text of only joiners is empty.
_INVISIBLE = (
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)
# Tag characters are visible in one place: a subdivision flag (🏴 + tag letters + cancel tag, as
# Scotland's), which is kept whole by matching it first and putting it back (group 1).
_INVISIBLE_OR_FLAG = f"(\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f)|{_INVISIBLE}"
_INVISIBLE_RE = re.compile(_INVISIBLE_OR_FLAG)
_EDGES = " \u200c\u200d"  # what is stripped from both ends once whitespace is collapsed to spaces
_URL = re.compile(URL_PATTERN, re.IGNORECASE)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)")
_PHONE = re.compile(rf"(?<!\d){PHONE_PATTERN}(?!\d)")


def normalize_text(text: str) -> str:
    """NFKC-normalise, drop invisible characters and collapse whitespace, so visually equal texts hash equally."""
    return _WS.sub(" ", _INVISIBLE_RE.sub(r"\1", unicodedata.normalize("NFKC", text))).strip(_EDGES)


def text_hash(normalized: str) -> str:
    """Stable 16-byte hex digest of an already normalised text."""
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).hexdigest()


# Python's \s (what normalize_text collapses) is Unicode White_Space plus \x1c-\x1f; polars' \s lacks those four.
_POLARS_WS = r"[\s\x1c-\x1f]+"


def normalize_texts(texts: pl.Series) -> pl.Series:
    """:func:`normalize_text` of every text of a Series (nulls stay null), several times faster:
    NFKC in a C-level loop, whitespace collapsed by polars."""
    nfkc = pl.Series(
        texts.name, [None if t is None else unicodedata.normalize("NFKC", t) for t in texts.to_list()], dtype=pl.Utf8
    )
    return nfkc.str.replace_all(_INVISIBLE_OR_FLAG, "${1}").str.replace_all(_POLARS_WS, " ").str.strip_chars(_EDGES)


def text_hashes(normalized: pl.Series) -> pl.Series:
    """:func:`text_hash` of every text of a Series (nulls stay null)."""
    blake2b = hashlib.blake2b
    return pl.Series(
        "text_hash",
        [None if t is None else blake2b(t.encode("utf-8"), digest_size=16).hexdigest() for t in normalized.to_list()],
        dtype=pl.Utf8,
    )


def mask_pii(text: str) -> str:
    """Mask URLs, card numbers and phone numbers for previews in the UI."""
    text = _URL.sub("<URL>", text)
    text = _CARD.sub("<CARD>", text)
    return _PHONE.sub("<PHONE>", text)


_MD_SPECIAL = re.compile(r"[!-/:-@\[-`{-~]")  # every ASCII punctuation character
_MD_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MD_SPACE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")


def escape_markdown(text: str) -> str:
    """Text from input made inert in markdown: it renders as the same characters, never as markup.

    Every ASCII punctuation character is backslash-escaped (CommonMark allows
    that for all of them), so no image, link, autolink, emphasis, table cell
    or heading can start; ``<``, ``>`` and ``&`` become entities, so no HTML
    tag or entity from input is interpreted; line breaks and control
    characters become one space, so a value stays on its table row.
    """
    text = _MD_SPACE.sub(" ", text)
    return _MD_SPECIAL.sub(lambda m: _MD_ENTITIES.get(m.group(), "\\" + m.group()), text)


def inert(value: object, width: int | None = None) -> str:
    """An input-derived value for markdown shown in the UI: PII masked, shortened, escaped."""
    text = mask_pii("" if value is None else str(value))
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return escape_markdown(text)
