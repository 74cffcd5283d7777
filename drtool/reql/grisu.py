"""RethinkDB's number printer: rapidjson's Grisu2 shortest digits plus its "prettify" step.

RethinkDB prints a non-integral double (or one beyond 2**53, or -0.0) with rapidjson's
``Writer::Double``, i.e. ``internal::dtoa``: Grisu2 (Loitsch, "Printing Floating-Point Numbers
Quickly and Accurately with Integers", 2010) with 64-bit "do-it-yourself" floats and cached
powers of ten, then a formatting step. Grisu2 produces digits that read back to the same double,
but not always the shortest or closest ones (``18014398509481984`` prints as
``18014398509481985.0``), so Python's ``repr`` cannot stand in for it. This module is an
independent implementation of that published algorithm with the same rounding choices, checked
against every value recorded from a real server (tests/test_canonical.py).

Public: ``format_double(x) -> str`` (the exact text rapidjson writes for a finite double).
"""

from __future__ import annotations

import struct
from functools import lru_cache

_M64 = (1 << 64) - 1
_HIDDEN = 1 << 52
_SIG_MASK = _HIDDEN - 1
_POW10 = [10**i for i in range(20)]


def _cached_power_table() -> list[tuple[int, int]]:
    """Normalised 64-bit approximations (f, e) of 10**k for k = -348, -340, ..., 340."""
    table = []
    for k in range(-348, 341, 8):
        if k >= 0:
            n = 10**k
            e = n.bit_length() - 64
            f = (n + (1 << (e - 1))) >> e if e > 0 else n << -e
        else:
            d = 10**-k
            e = -(d.bit_length() + 63)
            while True:
                f = ((1 << -e) + d // 2) // d
                if f >= 1 << 64:
                    e += 1
                elif f < 1 << 63:
                    e -= 1
                else:
                    break
        if f >= 1 << 64:  # rounding carried into bit 64
            f >>= 1
            e += 1
        table.append((f, e))
    return table


_CACHED = _cached_power_table()


def _mul(f1: int, f2: int) -> int:
    """High 64 bits of the 128-bit product, rounded half up (DiyFp::operator*)."""
    return (f1 * f2 + (1 << 63)) >> 64


def _round_weed(digits: list[int], delta: int, rest: int, ten_kappa: int, wp_w: int) -> None:
    while rest < wp_w and delta - rest >= ten_kappa and (
        rest + ten_kappa < wp_w or wp_w - rest > rest + ten_kappa - wp_w
    ):
        digits[-1] -= 1
        rest += ten_kappa


def _grisu2(value: float) -> tuple[str, int]:
    """Digits and decimal exponent K with value ~= int(digits) * 10**K (value > 0)."""
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    biased = (bits >> 52) & 0x7FF
    sig = bits & _SIG_MASK
    if biased:
        f, e = sig + _HIDDEN, biased - 1075
    else:
        f, e = sig, -1074
    # Boundaries m+ and m-, normalised so that m+ has its top bit at position 63.
    pf, pe = (f << 1) + 1, e - 1
    while not pf & (_HIDDEN << 1):
        pf <<= 1
        pe -= 1
    pf <<= 10
    pe -= 10
    if f == _HIDDEN:
        mf, me = (f << 2) - 1, e - 2
    else:
        mf, me = (f << 1) - 1, e - 1
    mf <<= me - pe
    # Normalise v itself.
    shift = 64 - f.bit_length()
    wf = f << shift  # its exponent, e - shift, is implied by the cached power chosen below
    # Cached power c = 10**-K with the product's exponent in [-60, -32].
    dk = (-61 - pe) * 0.30102999566398114 + 347
    k = int(dk)
    if dk - k > 0.0:
        k += 1
    index = (k >> 3) + 1
    big_k = -(-348 + (index << 3))
    cf, ce = _CACHED[index]
    w = _mul(wf, cf)
    wp = _mul(pf, cf) - 1
    wm = _mul(mf, cf) + 1
    e_one = pe + ce + 64  # exponent of the products (all share it)
    digits, kappa_k = _digit_gen(w, wp, wp - wm, -e_one)
    return "".join(map(str, digits)), big_k + kappa_k


def _digit_gen(w: int, mp: int, delta: int, neg_e: int) -> tuple[list[int], int]:
    one = 1 << neg_e
    wp_w = mp - w
    p1 = mp >> neg_e
    p2 = mp & (one - 1)
    kappa = len(str(p1))  # CountDecimalDigit32: 1 for 0
    digits: list[int] = []
    while kappa > 0:
        div = _POW10[kappa - 1]
        d, p1 = divmod(p1, div)
        if d or digits:
            digits.append(d)
        kappa -= 1
        tmp = (p1 << neg_e) + p2
        if tmp <= delta:
            _round_weed(digits, delta, tmp, _POW10[kappa] << neg_e, wp_w)
            return digits, kappa
    while True:
        p2 = (p2 * 10) & _M64
        delta = (delta * 10) & _M64
        d = p2 >> neg_e
        if d or digits:
            digits.append(d)
        p2 &= one - 1
        kappa -= 1
        if p2 < delta:
            # rapidjson 1.0.x (vendored by RethinkDB 2.4) scales wp_w by ``kPow10[-kappa]``
            # from a 10-entry uint32 table: past 9 fractional digits that read is out of
            # bounds. Modelled as 0 (no weeding), which reproduces the server's
            # 18014398509481984 -> "18014398509481985.0".
            index = -kappa
            _round_weed(digits, delta, p2, one, (wp_w * _POW10[index]) & _M64 if index < 10 else 0)
            return digits, kappa


def _exponent(k: int) -> str:
    return "e" + str(k)


def _prettify(digits: str, k: int) -> str:
    length = len(digits)
    kk = length + k  # 10**(kk-1) <= v < 10**kk
    if 0 <= k and kk <= 21:
        return digits + "0" * k + ".0"
    if 0 < kk <= 21:
        return digits[:kk] + "." + digits[kk:]
    if -6 < kk <= 0:
        return "0." + "0" * -kk + digits
    if length == 1:
        return digits + _exponent(kk - 1)
    return digits[0] + "." + digits[1:] + _exponent(kk - 1)


@lru_cache(maxsize=65536)
def format_double(value: float) -> str:
    """rapidjson ``Writer::Double``: ``0.0``/``-0.0`` for zeros, else Grisu2 + prettify.

    The caller rejects NaN and infinities (RethinkDB never stores them)."""
    if value == 0.0:
        return "-0.0" if struct.pack("<d", value)[7] & 0x80 else "0.0"
    if value < 0:
        digits, k = _grisu2(-value)
        return "-" + _prettify(digits, k)
    digits, k = _grisu2(value)
    return _prettify(digits, k)
