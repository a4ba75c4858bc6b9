"""What an image's header says about when, where and with what it was taken.

Read from the EXIF block Pillow parsed when it opened the file (``Image.getexif()``
reads the header only, no pixel is decoded): capture time, camera make and model, GPS
position and orientation. Anything missing or malformed is simply absent: a broken
EXIF block never costs the image.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image

#: EXIF tags (Pillow's ``ExifTags``): IFD0, the Exif sub-IFD and the GPS sub-IFD.
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED = 0x9003, 0x9004
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4


@dataclass(frozen=True)
class HeaderMeta:
    """EXIF facts about one image; ``None`` where the header does not say.

    ``taken_at``: capture time in seconds since 1970, from DateTimeOriginal (else
    DateTimeDigitized, else DateTime), which EXIF writes as local wall-clock time with
    no zone: it is read as if it were UTC, so that it compares with dates typed by
    the user the same way everywhere. ``latitude`` / ``longitude`` in degrees (south and
    west negative). ``orientation`` the EXIF value 1-8.
    """

    taken_at: float | None = None
    make: str | None = None
    model: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    orientation: int | None = None

    @property
    def empty(self) -> bool:
        return self == HeaderMeta()


def read_header_meta(image: Image.Image) -> HeaderMeta:
    """The header's facts about an opened (not necessarily decoded) image."""
    try:
        exif = image.getexif()
    except Exception:  # a broken EXIF block should not cost the image
        return HeaderMeta()
    if not exif:
        return HeaderMeta()
    try:
        details = exif.get_ifd(_EXIF_IFD)
    except Exception:
        details = {}
    try:
        gps = exif.get_ifd(_GPS_IFD)
    except Exception:
        gps = {}
    taken = None
    for source, tag in ((details, _DATETIME_ORIGINAL), (details, _DATETIME_DIGITIZED)):
        taken = taken or parse_exif_time(source.get(tag))
    taken = taken or parse_exif_time(exif.get(_DATETIME))
    latitude = _degrees(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "S", 90.0)
    longitude = _degrees(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "W", 180.0)
    if latitude is None or longitude is None:
        latitude = longitude = None
    orientation = exif.get(_ORIENTATION)
    return HeaderMeta(
        taken_at=taken,
        make=_text(exif.get(_MAKE)),
        model=_text(exif.get(_MODEL)),
        latitude=latitude,
        longitude=longitude,
        orientation=int(orientation)
        if isinstance(orientation, int) and 1 <= orientation <= 8
        else None,
    )


def parse_exif_time(value: Any) -> float | None:
    """``"YYYY:MM:DD HH:MM:SS"`` (EXIF's form) -> seconds since 1970, read as UTC."""
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("\x00")
    for form in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            moment = datetime.strptime(text[:19], form)
        except ValueError:
            continue
        if moment.year < 1900:
            return None
        return float(calendar.timegm(moment.timetuple()))
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip().strip("\x00").strip()
    return text[:200] or None


def _degrees(value: Any, reference: Any, negative: str, limit: float) -> float | None:
    """EXIF (degrees, minutes, seconds) rationals and an N/S or E/W reference -> signed
    degrees; None when absent or out of range."""
    try:
        d, m, s = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    degrees = d + m / 60.0 + s / 3600.0
    if not math.isfinite(degrees) or degrees > limit:
        return None
    ref = _text(reference) or ""
    return -degrees if ref.upper().startswith(negative) else degrees
