"""A small real collection whose metadata the tests know without asking Spyglass.

Twenty-four Caltech-101 images (six of each of four classes) written again, each with
the folder, format, size, EXIF (capture time, camera, GPS) and modification time that
:func:`plan` gives it. ``Planned`` records what was written, so the tests can work out
which images a filter keeps from the plan alone, not through the filter code.
"""

from __future__ import annotations

import calendar
import csv
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

CLASSES = ("sunflower", "watch", "starfish", "grand_piano")
PER_CLASS = 6


@dataclass(frozen=True)
class Planned:
    path: Path
    label: str
    folder: str  # the folder just inside the root: "site-a" or "site-b"
    format: str  # "JPEG" or "PNG"
    width: int
    height: int
    #: The date the filters use: EXIF capture time if written, else the mtime set.
    date: float
    camera: str | None  # "make model"
    gps: bool


def utc(year: int, month: int, day: int, hour: int = 12) -> float:
    return float(calendar.timegm((year, month, day, hour, 0, 0)))


def plan(data_root: Path, root: Path) -> list[Planned]:
    with (data_root / "caltech101" / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    planned = []
    n = 0
    for label in CLASSES:
        sources = sorted(r["path"] for r in rows if r["label"] == label)[:PER_CLASS]
        for source in sources:
            with Image.open(data_root / "caltech101" / source) as opened:
                image = opened.convert("RGB")
            folder = "site-a" if n % 2 == 0 else "site-b"
            png = n % 4 == 3
            if n % 5 == 0:
                image = image.resize((120, 90))
            exif = Image.Exif()
            camera, gps = None, False
            mtime = utc(2015, 5, 5) + n * 3600  # every file its own modification time
            date = mtime
            if not png and n % 3 == 0:
                exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
                date = utc(2019, 1 + n % 12, 10)
                exif.get_ifd(0x8769)[0x9003] = _exif_time(date)
                camera = "Canon EOS 5D"
            elif not png and n % 3 == 1:
                exif[0x010F], exif[0x0110] = "NIKON CORPORATION", "D750"
                date = utc(2021, 1 + n % 12, 20)
                exif.get_ifd(0x8769)[0x9003] = _exif_time(date)
                camera = "NIKON CORPORATION D750"
                if n % 6 == 1:
                    position = exif.get_ifd(0x8825)
                    position[1], position[2] = "N", (48.0, 51.0, 30.0)
                    position[3], position[4] = "E", (2.0, 17.0, 40.0)
                    gps = True
            nested = f"{folder}/room-{label}"
            target = root / nested / f"{label}-{n:02d}.{'png' if png else 'jpg'}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if png:
                image.save(target, "PNG")
            else:
                image.save(target, "JPEG", quality=92, exif=exif)
            os.utime(target, (mtime, mtime))
            planned.append(
                Planned(
                    target,
                    label,
                    folder,
                    "PNG" if png else "JPEG",
                    image.width,
                    image.height,
                    date,
                    camera,
                    gps,
                )
            )
            n += 1
    return planned


def _exif_time(seconds: float) -> str:
    import time

    return time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(seconds))
