"""The date text of Date:, Received:, Arrival-Date: and notices (Postfix's mail_date.c).

`mail_date(when)` gives RFC 5322 local time with the zone name in a comment, as
Postfix 3.9+ writes it: `Wed, 25 Nov 2026 13:45:16 +0000 (UTC)`.  The day of
the month is zero-padded (Postfix 3.8 and older pad it with a space instead);
both are valid RFC 5322.  It cannot fail for any time the platform can show.
"""

from __future__ import annotations

import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def mail_date(when: float | None = None) -> str:
    """RFC 5322 date of WHEN (seconds since the epoch; now if None) in local time."""
    moment = time.localtime(time.time() if when is None else when)
    offset = moment.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    zone = f" ({moment.tm_zone})" if moment.tm_zone else ""
    return (
        f"{_DAYS[moment.tm_wday]}, {moment.tm_mday:02d} {_MONTHS[moment.tm_mon - 1]} "
        f"{moment.tm_year} {moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} "
        f"{sign}{hours:02d}{minutes:02d}{zone}"
    )
