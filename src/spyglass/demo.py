"""Sample photos for the quick start, from scikit-image's bundled data (a PyPI wheel).

Only images whose licence is CC0 or public domain are used; each file's licence is
written next to it in ``LICENSES.txt``.
"""

from __future__ import annotations

from pathlib import Path

from spyglass.errors import MissingDependency

#: scikit-image data function -> (file name, licence as stated in its docstring).
SAMPLES = {
    "chelsea": ("chelsea-the-cat.png", "CC0, photographer Stefan van der Walt"),
    "coffee": ("coffee.png", "CC0, photographer Rachel Michetti"),
    "astronaut": ("astronaut.png", "public domain, NASA (Eileen Collins)"),
    "rocket": ("rocket.jpg", "public domain, SpaceX"),
    "camera": ("cameraman.png", "CC0, photographer Lav Varshney"),
    "horse": ("horse.png", "CC0, Andreas Preuss"),
    "clock": ("clock.png", "public domain, photographer Stefan van der Walt"),
    "coins": ("coins.png", "no known copyright restrictions (Brooklyn Museum)"),
    "hubble_deep_field": ("hubble-deep-field.jpg", "public domain, NASA"),
    "brick": ("brick.png", "CC0, CC0Textures"),
    "grass": ("grass.png", "CC0, CC0Textures"),
    "gravel": ("gravel.png", "CC0, CC0Textures"),
    "retina": ("retina.png", "CC0 1.0"),
    "cell": ("cell.png", "CC0"),
}


def write_sample_images(folder: Path) -> list[Path]:
    """Write the sample photos into ``folder`` (kept if already there). Returns their paths."""
    try:
        import skimage.data
    except ImportError as exc:
        raise MissingDependency(
            "the demo's sample photos come from: pip install scikit-image"
        ) from exc
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    licences = []
    for function, (name, licence) in SAMPLES.items():
        path = folder / name
        if not path.exists():
            pixels = getattr(skimage.data, function)()
            Image.fromarray(pixels).save(path)
        written.append(path)
        licences.append(f"{name}\t{licence}\tfrom scikit-image's skimage.data.{function}()")
    (folder / "LICENSES.txt").write_text("\n".join(licences) + "\n", encoding="utf-8")
    return written
