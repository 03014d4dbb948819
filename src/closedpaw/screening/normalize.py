"""Normalisation and decoding: the views of a text that the detectors read.

``views(text)`` returns (name, text) pairs, each already folded for matching:

* ``text``: invisible characters removed (zero-width, soft hyphen, bidi controls, Unicode tag
  characters), NFKC, Cyrillic/Greek look-alikes folded to Latin, spaced-out letters joined
  (``i g n o r e`` -> ``ignore``), case folded, whitespace collapsed;
* ``leet``: the same with digit/symbol look-alikes as letters (``1gn0re`` -> ``ignore``), when
  the text mixes them into words;
* ``rot13``: the rot13 of ``text``;
* ``tags``: what was written in Unicode tag characters (invisible ASCII), when there is any;
* ``hidden``: text inside HTML comments, hidden elements, alt/title attributes and markdown
  comments;
* ``base64`` / ``hex`` / ``url``: decoded runs that decode to readable text.

Everything here is pure and bounded: at most :data:`MAX_DECODED` runs are decoded.
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
import unicodedata
import urllib.parse
from itertools import accumulate, filterfalse, repeat
from operator import and_, ge, lt, mul, sub

__all__ = ["MAX_DECODED", "fold", "invisible_counts", "views", "views_and_invisible"]

MAX_DECODED = 16

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u180e\u00ad\u034f\u2061\u2062\u2063\u2064"
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"

#: look-alike letters (Cyrillic, Greek, Armenian, Latin variants) -> the Latin letter
_HOMOGLYPHS: dict[str, str] = {
    "a": "\u0430\u0410\u03b1\u0391", "b": "\u0432\u0412\u03b2\u0392", "c": "\u0441\u0421",
    "d": "\u0501", "e": "\u0435\u0451\u0415\u03b5\u0395", "g": "\u0261",
    "h": "\u043d\u04bb\u041d\u0397", "i": "\u0456\u0457\u0406\u03b9\u0399", "j": "\u0458\u0408",
    "k": "\u043a\u041a\u03ba\u039a", "l": "\u04cf", "m": "\u043c\u041c\u039c",
    "n": "\u0578\u03b7\u039d", "o": "\u043e\u041e\u03bf\u039f", "p": "\u0440\u0420\u03c1\u03a1",
    "q": "\u051b", "s": "\u0455\u0405", "t": "\u0442\u0422\u03c4\u03a4", "u": "\u057d\u03c5",
    "v": "\u03bd", "w": "\u051d", "x": "\u0445\u0425\u03c7\u03a7", "y": "\u0443\u0423\u03a5",
    "z": "\u0396",
}
_FOLD = str.maketrans({c: latin for latin, chars in _HOMOGLYPHS.items() for c in chars})
_HOMOGLYPH_RE = re.compile("[" + "".join(_HOMOGLYPHS.values()) + "]")
_HOMOGLYPH_RUN = re.compile("[" + "".join(_HOMOGLYPHS.values()) + "]+")
_INVISIBLE_RE = re.compile("[" + _ZERO_WIDTH + _BIDI + "\U000e0000-\U000e007f]")
_TAG_RE = re.compile("[\U000e0000-\U000e007f]")
_ZW_RE = re.compile("[" + _ZERO_WIDTH + "]")
_BIDI_RE = re.compile("[" + _BIDI + "]")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                       "$": "s", "|": "l"})
_SPACED = re.compile(r"(?<!\S)(?:\w[ .\-_*·]){3,}\w(?!\S)")
_SEP = re.compile(r"[ .\-_*·]")
#: what every match of _SPACED contains (from its second character on); led by the
#: separator class, so the engine skips ahead instead of trying each position
_SPACED_HINT = re.compile(r"[ .\-_*·]\w[ .\-_*·]\w[ .\-_*·]")
_SEPS = "-.*_\u00b7"
#: a word of 7 or more characters whose 2nd and 4th are in _SEPS (found from its 2nd
#: character: the class leads, so the engine skips ahead to it)
_DOTTED_WORD = re.compile(
    r"[-.*_\u00b7](?<!\S\S[-.*_\u00b7])(?<=\S[-.*_\u00b7])\S[-.*_\u00b7]\S{3}")
_COMBINING_RANGES = ((0x300, 0x36F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF),
                     (0xFE20, 0xFE2F))
_COMBINING = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _COMBINING_RANGES) + "]")
_COMBINING_CHARS = frozenset(chr(c) for a, b in _COMBINING_RANGES for c in range(a, b + 1))
#: an override phrase with its spaces taken out ("ign ore prev ious instru ctions"): the
#: ``squeezed`` view re-spaces it so the ordinary rules read it
_SQUEEZED_HINT = re.compile(
    r"(ignore|disregard|forget)(all|the|your|any)?(previous|prior|above|earlier|system)"
    r"(instructions?|rules|prompts?|guidelines)")


def _override_phrase(s: str) -> bool:
    """``_SQUEEZED_HINT.search(s)``, tried only where one of its verbs starts."""
    for verb in ("ignore", "disregard", "forget"):
        i = s.find(verb)
        while i >= 0:
            if _SQUEEZED_HINT.match(s, i):
                return True
            i = s.find(verb, i + 1)
    return False


def _spaced_out(m: re.Match[str]) -> str:
    return " " + " ".join(g for g in m.groups() if g) + " "
_ROT13 = str.maketrans("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                       "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM")

_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){10,}(?![0-9A-Fa-f])")
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_HIDDEN = re.compile(
    r"<!--(.*?)(?:-->|$)"
    r"|<(\w+)[^>]*(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0"
    r"|opacity\s*:\s*0(?![.\d]*[1-9]))[^>]*>(.*?)</\2>"
    r"|\b(?:alt|title|aria-label)\s*=\s*[\"']([^\"']{8,})[\"']"
    r"|^\s*\[//\]:\s*#\s*[(\"'](.*?)[)\"']\s*$",
    re.S | re.I | re.M)


def _hidden_matches(raw: str) -> list[re.Match[str]]:
    """``list(_HIDDEN.finditer(raw))``. In ASCII text the pattern is tried only where one of
    its alternatives can start (``<``; ``alt``, ``title``, ``aria-label`` in any case; a
    line start followed by blank space and ``[//]``) instead of at every character."""
    if not raw.isascii():
        return list(_HIDDEN.finditer(raw))
    low = raw.lower()
    starts: set[int] = set()
    for needle in ("<", "alt", "title", "aria-label"):
        i = low.find(needle)
        while i >= 0:
            starts.add(i)
            i = low.find(needle, i + 1)
    i = raw.find("[//]")
    while i >= 0:
        first = i
        while first > 0 and raw[first - 1].isspace():
            first -= 1
        starts.update(c for c in range(first, i + 1) if c == 0 or raw[c - 1] == "\n")
        i = raw.find("[//]", i + 1)
    found: list[re.Match[str]] = []
    end = 0
    for c in sorted(starts):
        if c >= end and (m := _HIDDEN.match(raw, c)) is not None:
            found.append(m)
            end = m.end()
    return found


def invisible_counts(text: str) -> tuple[int, int, int]:
    """(zero-width, bidi control, tag characters) in ``text``."""
    if text.isascii() or not _INVISIBLE_RE.search(text):
        return 0, 0, 0
    return (len(_ZW_RE.findall(text)), len(_BIDI_RE.findall(text)),
            len(_TAG_RE.findall(text)))


def strip_invisible(text: str) -> str:
    if text.isascii() or not _INVISIBLE_RE.search(text):
        return text
    return _INVISIBLE_RE.sub("", text)


def _join_spaced(m: re.Match[str]) -> str:
    return _SEP.sub("", m.group(0))


def fold(text: str) -> str:
    """The ``text`` view of any string."""
    return _fold(text)[0]


def _fold(text: str) -> tuple[str, list[str] | None, bool, set[str] | None]:
    """``fold(text)``; when ``text`` is ASCII, ``text.split()`` (which ``views`` needs
    again); whether ``text`` has invisible characters; when it is not ASCII, the set of its
    characters (one pass, then every "is there a character of this kind" is a set test)."""
    ascii_words = None
    invisible = False
    chars = None
    shape_chars = None
    if not text.isascii():
        chars = set(text)
        invisible = not _INVISIBLE_CHARS.isdisjoint(chars)
        folded = unicodedata.normalize("NFKC", _INVISIBLE_RE.sub("", text) if invisible else text)
        if folded is text:                  # already NFKC: its characters are ``chars``
            shape_chars = chars
            glyphs = not _HOMOGLYPH_CHARS.isdisjoint(chars)
        else:
            glyphs = _HOMOGLYPH_RE.search(folded) is not None
        if glyphs:
            folded = _fold_homoglyphs(folded)
            shape_chars = None
        text = folded
        words = text.split()
    else:
        words = ascii_words = text.split()
    # spaced-out letters: four one-letter words, or a word like "i.g.n.o.r.e"; whether
    # ``_SPACED`` can match at all is asked first when that is the cheap question
    if ascii_words is not None or shape_chars is not None:
        spaced = _maybe_spaced(text, shape_chars) and _spaced_words(words, text)
    else:
        spaced = _spaced_words(words, text) and _maybe_spaced(text)
    if spaced:
        text = _SPACED.sub(_join_spaced, text)
        words = text.split()
    return " ".join(words).casefold(), ascii_words, invisible, chars


def _spaced_words(words: list[str], text: str) -> bool:
    """Four one-letter words, or a word like "i.g.n.o.r.e" (``words``: ``text.split()``)."""
    return list(map(len, words)).count(1) >= 4 or _DOTTED_WORD.search(text) is not None


def _maybe_spaced(text: str, chars: set[str] | None = None) -> bool:
    """``_SPACED_HINT.search(text)`` (what every match of ``_SPACED`` contains), as a plain
    substring test on the text's shape (letters and digits as ``w``, separators as ``s``)
    when no character is both (``_``) and, given the set of the characters of a non-ASCII
    ``text``, none of its non-ASCII ones is a letter, a digit or a separator (each is then
    read as ``?``)."""
    if "_" in text:
        return _SPACED_HINT.search(text) is not None
    if text.isascii():
        return "swsws" in text.translate(_SHAPE)
    if chars is not None and not any(c.isalnum() or c == "\u00b7" for c in chars - _ASCII):
        return b"swsws" in text.encode("ascii", "replace").translate(_BYTE_SHAPE)
    return _SPACED_HINT.search(text) is not None


_ASCII = frozenset(map(chr, range(128)))
_BYTE_SHAPE = bytes(ord("w") if chr(b).isalnum() and b < 128 else ord("s") if chr(b) in " .-*"
                    else ord("o") for b in range(256))
_INVISIBLE_CHARS = frozenset(_ZERO_WIDTH + _BIDI) | frozenset(map(chr, range(0xE0000, 0xE0080)))
_HOMOGLYPH_CHARS = frozenset("".join(_HOMOGLYPHS.values()))
_SHAPE = str.maketrans({**dict.fromkeys(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "w"),
    **dict.fromkeys(" .-*", "s")})


def _combining_marks(text: str, chars: set[str]) -> int:
    """``len(_COMBINING.findall(unicodedata.normalize("NFC", text)))``; ``chars`` is the set
    of the characters of ``text``."""
    composed = unicodedata.normalize("NFC", text)
    if composed is text and _COMBINING_CHARS.isdisjoint(chars):
        return 0
    return len(_COMBINING.findall(composed))


def _fold_homoglyphs(text: str) -> str:
    """``text.translate(_FOLD)``; when few characters are not ASCII, by translating only
    the runs of look-alikes (``translate`` reads a text with any non-ASCII character one
    character at a time)."""
    if 16 * (len(text) - len(text.encode("ascii", "ignore"))) <= len(text):
        return _HOMOGLYPH_RUN.sub(_fold_run, text)
    return text.translate(_FOLD)


def _fold_run(m: re.Match[str]) -> str:
    return m.group().translate(_FOLD)


def _readable(data: bytes) -> str | None:
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(s) < 8:
        return None
    printable = sum(map(str.isprintable, s)) + s.count("\n") + s.count("\t")
    letters = sum(map(str.isalpha, s))
    if printable < 0.9 * len(s) or letters < 0.5 * len(s) or " " not in s:
        return None
    return s


_SENTENCE = re.compile(r"(?<=[.!?:;])\s+")
_B32_RUN = re.compile(r"[A-Z2-7]{16,}=*")
_DECIMALS = re.compile(r"(?:\b(?:3[2-9]|[4-9]\d|1[01]\d|12[0-6])\b[ ,;]+){7,}"
                       r"(?:3[2-9]|[4-9]\d|1[01]\d|12[0-6])\b")
_BINARY = re.compile(r"(?:\b[01]{8}\b[ ,]*){6,}")
#: where the first match of _DECIMALS / _BINARY can start at the earliest (each of their
#: matches starts with a match of these, which the engine finds by skipping ahead)
_DECIMALS_START = re.compile(r"[13-9]\d{1,2}[ ,;]")
_EIGHT_BITS = re.compile(r"[01]{8}")
_SHIFTS = [str.maketrans("abcdefghijklmnopqrstuvwxyz",
                         "abcdefghijklmnopqrstuvwxyz"[k:] + "abcdefghijklmnopqrstuvwxyz"[:k])
           for k in range(26)]


def _best_shift(sentence: str) -> str | None:
    """The Caesar shift of ``sentence`` (not 0, not 13: rot13 has its own view) that reads
    most like prose, if one does. The common words each shift makes are counted in one
    pass: a word is some common word shifted by k exactly when both read the same once
    shifted to start with ``a``."""
    words = sentence.split(" ")
    counts = [0] * 26
    for w in words:
        if len(w) <= _STOPWORD_MAX and w.isascii() and w.isalpha() and w.islower():
            first = ord(w[0]) - 97
            for o in _SHIFT_FORMS.get(w.translate(_SHIFTS[-first % 26]), ()):
                counts[(o - first) % 26] += 1
    best_k, best_n = 0, 0
    for k in range(1, 26):
        if k != 13 and counts[k] > best_n:
            best_k, best_n = k, counts[k]
    if best_k == 0 or best_n < max(2, 0.15 * len(words)):
        return None
    return sentence.translate(_SHIFTS[best_k])


def _gibberish(words: list[str]) -> bool:
    """Six words or more with almost none of the common short words of our languages."""
    return len(words) >= 6 and sum(map(_STOPWORDS.__contains__, words)) < 0.12 * len(words)


def _odd_parts(base: str, words: list[str], counts: list[int]) -> list[str]:
    """The sentences of ``base`` (split after ``.!?:;`` and a space, as ``_SENTENCE``
    does) that are gibberish, when there are two sentences or more. ``base`` is a folded
    text (single spaces, nothing else white), ``words`` its ``split(" ")`` and ``counts``
    the running count of common words among them (``counts[i]`` in ``words[:i]``): each
    sentence is a run of words, counted without splitting it into words again."""
    n = len(words)
    if n < 6:
        return []
    if "\0" in base:
        sentences = _SENTENCE.split(base)
    else:
        marked = base
        for mark in ".!?:;":
            if mark + " " in marked:
                marked = marked.replace(mark + " ", mark + "\0")
        sentences = marked.split("\0")
    if len(sentences) < 2:
        return []                           # one sentence: the whole text
    # sentence i is words[starts[i]:ends[i]]; it is gibberish when it has 6 words or more
    # and fewer than 12 % of them are common words (counted from running sums, in C)
    ends = list(accumulate(map(_PLUS_ONE, map(_SPACES, sentences))))
    starts = [0, *ends[:-1]]
    sizes = list(map(sub, ends, starts))
    common = map(sub, map(counts.__getitem__, ends), map(counts.__getitem__, starts))
    odd = list(map(and_, map(ge, sizes, repeat(6)), map(lt, common, map(mul, repeat(0.12),
                                                                        sizes))))
    if not any(odd):
        return []
    return [" ".join(words[a:b]) for a, b, o in zip(starts, ends, odd, strict=True) if o]


def _morse(run: str) -> str:
    words = re.split(r"\s*/\s*|\s{3,}", run.strip())
    return " ".join("".join(_MORSE.get(ch, "") for ch in w.split()) for w in words)


def _unescape(run: str) -> str:
    import html

    if "&#" in run:
        return html.unescape(run)
    out = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), run)
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), out)


def _tags_text(text: str) -> str:
    return "".join(chr(ord(ch) - 0xE0000) for ch in _TAG_RE.findall(text)
                   if 0xE0020 <= ord(ch) <= 0xE007E)


def _leet_hint(words: list[str]) -> bool:
    """Some word mixes letters with digit or symbol look-alikes (``1gn0re``, ``a11``)."""
    for w in filterfalse(str.isalpha, words):
        if len(w) > 2 and not w.isdigit():
            core = w.strip(".,;:!?()[]{}\"'")
            if core and _LEET_WORD.fullmatch(core):
                return True
    return False


def _leet_hint_in(base: str) -> bool:
    """``_leet_hint(base.split(" "))``, reading only the words with a look-alike next to a
    letter (every word that makes it true has one); in ASCII text, whether there is one at
    all is a substring test on the text's shape first."""
    if base.isascii():
        shape = base.translate(_LEET_SHAPE)
        if "1a" not in shape and "a1" not in shape:
            return False
    pos = 0
    while (m := _LEET_NEXT_TO_LETTER.search(base, pos)) is not None:
        i = m.start()
        end = base.find(" ", i)
        if end < 0:
            end = len(base)
        if _leet_hint([base[base.rfind(" ", 0, i) + 1:end]]):
            return True
        pos = end + 1
    return False


_LEET_WORD = re.compile(r"(?=.*[a-z])(?=.*[013457@$|])[a-z013457@$|]{3,}")
#: letters as ``a``, look-alikes as ``1`` (every other character is neither)
_LEET_SHAPE = str.maketrans({**dict.fromkeys("abcdefghijklmnopqrstuvwxyz", "a"),
                             **dict.fromkeys("013457@$|", "1")})
_ROT_HINT = ("rot13", "rot-13", "rot 13", "caesar", "rotate")
#: frequent short words of EN, DE, FR, ES, IT: a text of words with none of them is not
#: plain prose in these languages, so its rot13 and its reversal are screened too
_STOPWORDS = frozenset(
    [
        "the", "a", "an", "and", "or", "to", "of", "in", "on", "is", "are", "be", "you", "your",
        "it", "this", "that", "for", "with", "as", "at", "by", "not", "der", "die", "das", "und",
        "ist", "zu", "den", "nicht", "mit", "sie", "ein", "eine", "ich", "du", "le", "la", "les",
        "et", "est", "un", "une", "de", "des", "pour", "pas", "que", "qui", "il", "el", "los",
        "las", "y", "es", "en", "por", "no", "un", "una", "con", "para", "il", "lo", "di", "che",
        "e", "per", "non", "una", "sono",
    ])
_STOPWORD_MAX = max(len(w) for w in _STOPWORDS)
#: each common word shifted to start with ``a`` -> the first letters (0-25) of the
#: common words of that form
_SHIFT_FORMS: dict[str, tuple[int, ...]] = {}
for _w in sorted(_STOPWORDS):
    _form = _w.translate(_SHIFTS[-(ord(_w[0]) - 97) % 26])
    _SHIFT_FORMS[_form] = (*_SHIFT_FORMS.get(_form, ()), ord(_w[0]) - 97)
del _w, _form
_MORSE = dict(zip(
    [
        ".-", "-...", "-.-.", "-..", ".", "..-.", "--.", "....", "..", ".---", "-.-", ".-..",
        "--", "-.", "---", ".--.", "--.-", ".-.", "...", "-", "..-", "...-", ".--", "-..-",
        "-.--", "--..", "-----", ".----", "..---", "...--", "....-", ".....", "-....", "--...",
        "---..", "----.",
    ],
    "abcdefghijklmnopqrstuvwxyz0123456789", strict=True))
_MORSE_RUN = re.compile(r"(?:[.\-]{1,6}[ /]+){8,}[.\-]{1,6}")
_ESCAPES = re.compile(r"(?:\\u[0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2}|&#x?[0-9a-fA-F]{2,5};){6,}")
_HIDDEN_HINT = ("<!--", "display", "visibility", "font-size", "opacity", "alt=", "title=",
                "aria-label", "[//]")
_B64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{16,}={0,2}")
#: a digit or symbol look-alike next to a letter: what a word ``_leet_hint`` looks for
#: has (the class leads, so the engine skips ahead to such characters)
_LEET_NEXT_TO_LETTER = re.compile(r"[013457@$|](?:(?<=[a-z].)|(?=[a-z]))")
_SPACES = operator.methodcaller("count", " ")
_PLUS_ONE = (1).__add__
_SPACE_DIGITS = tuple(f" {d}" for d in "123456789")


def views(text: str) -> list[tuple[str, str]]:
    return views_and_invisible(text)[0]


def views_and_invisible(text: str) -> tuple[list[tuple[str, str]], bool]:
    """``views(text)`` and whether ``text`` has invisible characters (zero-width, bidi
    controls, tag characters: ``invisible_counts`` is not all zero)."""
    out: list[tuple[str, str]] = []
    base, ascii_words, invisible, chars = _fold(text)
    out.append(("text", base))
    words = base.split(" ")
    if _leet_hint_in(base):
        leet = base.translate(_LEET)
        if leet != base:
            out.append(("leet", leet))
    # running count of the common words: _gibberish(words), then each sentence
    counts = list(accumulate(map(_STOPWORDS.__contains__, words), initial=0))
    odd = [base] if len(words) >= 6 and counts[-1] < 0.12 * len(words) else _odd_parts(
        base, words, counts)
    if odd or any(map(base.__contains__, _ROT_HINT)):
        out.append(("rot13", " ".join(odd or [base]).translate(_ROT13)))
    if odd:
        out.append(("reversed", " ".join(p[::-1] for p in odd)))
        shifted = [c for c in (_best_shift(p) for p in odd) if c]
        if shifted:
            out.append(("caesar", " ".join(shifted)))
    if ".-" in text or "-." in text:
        for run in _MORSE_RUN.findall(text)[:MAX_DECODED]:
            out.append(("morse", _morse(run)))
    if "\\" in text or "&#" in text:
        for run in _ESCAPES.findall(text)[:MAX_DECODED]:
            out.append(("escapes", fold(_unescape(run))))
    raw = text
    # marks left after composition sit on letters that have no precomposed form (or are
    # stacked): not how any of our languages is written
    if chars is not None and _combining_marks(text, chars) >= 2:
            marked = unicodedata.normalize("NFD", text)
            out.append(("unmarked", fold(_COMBINING.sub("", marked))))
    squeezed = base.replace(" ", "")
    if ("ignor" in squeezed or "disregard" in squeezed or "forget" in squeezed) and \
            _override_phrase(squeezed) and not _override_phrase(base):
        out.append(("squeezed", _SQUEEZED_HINT.sub(_spaced_out, squeezed)))
    if invisible:
        tags = _tags_text(text)
        if tags.strip():
            out.append(("tags", fold(tags)))
        raw = _INVISIBLE_RE.sub("", text)
    hidden_raw = ""
    if any(map(base.__contains__, _HIDDEN_HINT)):
        hidden = [next((g for g in m.groups()[0:1] + m.groups()[2:] if g), "")
                  for m in _hidden_matches(raw)]
        hidden = [h for h in hidden if h.strip()]
        if hidden:
            hidden_raw = " \n ".join(hidden)
            out.append(("hidden", fold(hidden_raw)))
    decoded = 0
    raw_words = ascii_words if ascii_words is not None and raw is text else raw.split()
    long_words = [w for w in raw_words if len(w) >= 16] if raw_words and max(
        map(len, raw_words)) >= 16 else []
    for word in long_words:
        if decoded >= MAX_DECODED:
            break
        for run in _B64_RUN.findall(word):
            if run.isalpha() and (run.islower() or run.isupper()):
                continue   # a plain long word, not base64
            try:
                data = base64.b64decode(run.replace("-", "+").replace("_", "/")
                                        + "=" * (-len(run.rstrip("=")) % 4), validate=False)
            except (binascii.Error, ValueError):
                continue
            s = _readable(data)
            if s is not None:
                out.append(("hidden_base64" if run in hidden_raw else "base64", fold(s)))
                decoded += 1
        if word.isupper() or word.isdigit():
            for run in _B32_RUN.findall(word):
                try:
                    core = run.rstrip("=")
                    data = base64.b32decode(core + "=" * (-len(core) % 8))
                except (binascii.Error, ValueError):
                    continue
                s = _readable(data)
                if s is not None:
                    out.append(("base32", fold(s)))
                    decoded += 1
        for hx in _HEX.findall(word):
            s = _readable(bytes.fromhex(hx))
            if s is not None:
                out.append(("hex", fold(s)))
                decoded += 1
    if sum(map(raw.count, _SPACE_DIGITS)) >= 8 and (first := _DECIMALS_START.search(raw)):
        for run in _DECIMALS.findall(raw, first.start())[:MAX_DECODED]:
            text_of = _readable(bytes(int(n) for n in re.findall(r"\d+", run)))
            if text_of is not None:
                out.append(("decimal", fold(text_of)))
    if raw.count("0") + raw.count("1") >= 48 and (first := _EIGHT_BITS.search(raw)):
        for run in _BINARY.findall(raw, first.start())[:MAX_DECODED]:
            text_of = _readable(bytes(int(b, 2) for b in re.findall(r"[01]{8}", run)))
            if text_of is not None:
                out.append(("binary", fold(text_of)))
    if raw.count("%") >= 3 and len(_PCT.findall(raw, 0, 4096)) >= 3:
        s = urllib.parse.unquote_plus(raw)
        if s != raw:
            out.append(("url", fold(s)))
    return out, invisible
