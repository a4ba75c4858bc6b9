"""Canonical JSON: the one text of a JSON value that case-file digests and audit-log
hashes are taken of.

A digest must not change when a file is only parsed and written again. Key order and
whitespace are easy; numbers are not: Python writes ``1.0`` and ``1e-05`` where
JavaScript (and many JSON libraries) write ``1`` and ``0.00001``, both the same
number. :func:`canonical_json` is the JSON Canonicalization Scheme (RFC 8785): keys
sorted by their UTF-16 code units, no whitespace, strings escaped as ECMAScript's
``JSON.stringify`` escapes them, and every number written as ECMAScript writes a
double (the shortest digits that read back to it: ``1.0`` is ``1``, ``1e-05`` is
``0.00001``, ``1e+21`` stays ``1e+21``). It depends only on the values, so any client
that keeps the values keeps the digest, and a JavaScript client can compute it with
any RFC 8785 library.

:func:`legacy_canonical_json` is the form digests were taken of before (Python's
``json.dumps`` with sorted keys): files sealed that way still verify.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

#: A lone UTF-16 surrogate (a pair is one character in a Python string, never two):
#: ``JSON.stringify`` escapes it, as RFC 8785 asks.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
#: Integers beyond this are not all doubles: RFC 8785 writes them as the double they read as.
_EXACT_INTEGERS = 2**53


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical form of a JSON value (dicts, lists, str, int, float,
    bool, None), UTF-8. Raises ``ValueError`` for NaN or infinity (not JSON)."""
    return "".join(_pieces(value)).encode("utf-8")


def legacy_canonical_json(value: Any) -> bytes:
    """The canonical form of case-file format 1 and the first audit logs: Python's
    ``json.dumps`` with sorted keys and no spaces (``1.0`` and ``1`` differ)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def number_text(number: int | float) -> str:
    """A number as ECMAScript's ``Number.prototype.toString`` writes the double it is."""
    if isinstance(number, int) and abs(number) < _EXACT_INTEGERS:
        return str(number)
    try:
        value = float(number)
    except OverflowError as error:
        raise ValueError(f"{number} is beyond any JSON number a double holds") from error
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON number")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that read back to the same double, as ECMAScript's
    # algorithm does; only their layout differs.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent = int(exponent) + len("".join(map(str, digit_tuple))) - len(digits)
    k = len(digits)
    n = k + exponent  # the value is 0.digits × 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def _pieces(value: Any) -> list[str]:
    if value is None:
        return ["null"]
    if value is True:
        return ["true"]
    if value is False:
        return ["false"]
    if isinstance(value, int | float):
        return [number_text(value)]
    if isinstance(value, str):
        return [_string(value)]
    if isinstance(value, dict):
        pieces = ["{"]
        for n, key in enumerate(sorted(value, key=_utf16_order)):
            if not isinstance(key, str):
                raise ValueError(f"a JSON object's key is a string, not {key!r}")
            pieces += [",", _string(key), ":"] if n else [_string(key), ":"]
            pieces += _pieces(value[key])
        return [*pieces, "}"]
    if isinstance(value, list | tuple):
        pieces = ["["]
        for n, item in enumerate(value):
            if n:
                pieces.append(",")
            pieces += _pieces(item)
        return [*pieces, "]"]
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def _string(text: str) -> str:
    # json.dumps escapes as JSON.stringify does (", \\, \b \f \n \r \t, other control
    # characters as \u00xx in lower case) and leaves the rest as it is.
    escaped = json.dumps(text, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped)


def _utf16_order(key: Any) -> bytes:
    return str(key).encode("utf-16-be", "surrogatepass")
