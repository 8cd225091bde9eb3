"""What the text protocol's classic and meta commands share, sans I/O.

What lives here: memcached's number parsing (its safe_strto* functions, C
quirks included), its base64 decoder for meta keys, ``Reply`` (a request
the codec answers itself), and the reply lines and limits both command sets
use. What does not: parsing command lines or writing a command's reply
(``text``, ``meta``).
"""

from __future__ import annotations

import base64
import re
from typing import NamedTuple

from ..storage import NO_MEMORY, NON_NUMERIC, NOT_FOUND

CRLF = b"\r\n"
UINT64_MAX = (1 << 64) - 1
INT32_MAX = (1 << 31) - 1


class Reply(NamedTuple):
    """A request the text codec answers itself with ``data`` (an error line,
    ``verbosity``'s OK, ``mn``'s MN), without the command layer."""

    data: bytes

    command = "reply"  # for the writer table; the command layer never sees one


def reply(line: bytes) -> Reply:
    return Reply(line + CRLF)


def put(out: list, data: bytes) -> int:
    """Append one reply to out; its size."""
    out.append(data)
    return len(data)


ERROR = reply(b"ERROR")
BAD_FORMAT = b"CLIENT_ERROR bad command line format"
BAD_FORMAT_REPLY = reply(BAD_FORMAT)
BAD_CHUNK = reply(b"CLIENT_ERROR bad data chunk")
# incr, decr and ma's failures.
ARITH_ERRORS = {
    NOT_FOUND: b"NOT_FOUND\r\n",
    NON_NUMERIC: b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    NO_MEMORY: b"SERVER_ERROR out of memory\r\n",
}
# A line that was consumed and has nothing to say (noreply), or a storage
# command now waiting for its data block: look at the stream again.
AGAIN = object()


# -- numbers, as memcached's safe_strto* read them --------------------------

# strtoull and friends: optional leading white space, a sign, digits; the
# number must then end or be followed by white space. Anchored by match(),
# so a failing line is backtracked over once: linear in its length. (No
# possessive quantifiers: PyPy's re is Python 3.9's.)
_NUMBER = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)(?:[ \t\n\v\f\r]|\Z)")


def _digits(token: bytes) -> tuple[bool, int] | None:
    match = _NUMBER.match(token)
    if match is None:
        return None
    digits = match.group(2).lstrip(b"0")
    if len(digits) > 20:  # past 2**64 (and past what int() parses quickly)
        return match.group(1) == b"-", UINT64_MAX + 1
    return match.group(1) == b"-", int(digits or b"0")


def strtoull(token: bytes) -> int | None:
    """memcached's safe_strtoull: an unsigned 64-bit number, or None.

    As C's strtoull, "-5" is 2**64 - 5, which memcached then refuses
    because it sees a minus sign on a number that is negative as signed.
    """
    if len(token) < 20 and token.isdigit():
        return int(token)
    parsed = _digits(token)
    if parsed is None:
        return None
    negative, number = parsed
    if number > UINT64_MAX:
        return None  # ERANGE
    if negative and number:
        number = (1 << 64) - number
        if number >> 63:
            return None
    return number


def strtoul32(token: bytes) -> int | None:
    """memcached's safe_strtoul into a uint32: a 64-bit strtoul, truncated."""
    if len(token) < 10 and token.isdigit():
        return int(token)
    number = strtoull(token)
    return None if number is None else number & 0xFFFFFFFF


def strtol32(token: bytes) -> int | None:
    """memcached's safe_strtol into an int32: a 64-bit strtol, truncated."""
    if len(token) < 10 and token.isdigit():
        return int(token)
    parsed = _digits(token)
    if parsed is None:
        return None
    negative, number = parsed
    if negative:
        number = -number
    if not -(1 << 63) <= number < 1 << 63:
        return None  # ERANGE
    return ((number + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


# -- base64 keys, as memcached's decoder reads them --------------------------

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUES = [-1] * 256
for _i, _c in enumerate(_B64_ALPHABET):
    _B64_VALUES[_c] = _i
_B64_VALUES[ord("=")] = 0
_PAD = ord("=")


def b64decode(token: bytes) -> bytes | None:
    """memcached's base64_decode: the key, or None where it reports failure.

    It skips characters outside the alphabet, needs a multiple of four
    that remain, and stops after the first block with padding.
    """
    values = _B64_VALUES
    kept = [c for c in token if values[c] >= 0]
    if not kept or len(kept) % 4:
        return None
    out = bytearray()
    pad = 0
    for i in range(0, len(kept), 4):
        block = kept[i : i + 4]
        pad += block.count(_PAD)
        a, b, c, d = (values[x] for x in block)
        out += bytes(((a << 2 | b >> 4) & 255, (b << 4 | c >> 2) & 255, (c << 6 | d) & 255))
        if pad:
            if pad > 2:
                return None
            del out[-pad:]
            break
    return bytes(out)


b64encode = base64.b64encode
