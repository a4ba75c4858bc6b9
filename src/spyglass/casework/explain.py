"""Why it matched: occlusion heatmaps of the regions that drive a result's score.

A result's score is the cosine between the image's vector and the query's vector. To
see which regions drive it, copies of the image are made with one window hidden each
(filled with a blurred copy of itself, so no hard edge or foreign colour enters), all
copies are embedded through the encoder's ordinary image path, and each window's
*drop* in the cosine is credited to the grid cells it covers:

    heat(c) = mean over windows W that cover cell c of ( s(image) - s(image without W) )

Nothing here looks inside a model: any :class:`~spyglass.encoders.base.Encoder` works
(the bundled ConSE model, CLIP), at the cost of one forward pass per window. The
default is a 6x6 grid of cells with windows of 2x2 and 3x3 cells at a stride of one
cell: 25 + 16 = 41 masked copies plus the original, embedded in batches (docs/casework.md
has what finer grids cost and gain).

The same machinery explains the query image of an image query: its windows are hidden
instead, the query vector made again from the masked copies (the other terms as they
were), and the cosine taken with the result's stored vector.

Regions the encoder never sees (outside its centre crop) get no heat: hiding them
changes nothing. Heat is a drop in cosine, so it is comparable between results of one
query; negative heat (hiding a region *raised* the score) is kept in :attr:`Heatmap.cells`
and shown as no heat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from spyglass.encoders.base import Encoder

#: Scores a batch of embedded copies: {space: (n, dims) float32} -> (n,) float32.
Scorer = Callable[[dict[str, np.ndarray]], np.ndarray]

#: How masked copies are filled: ``blur`` (the image blurred by a cell's size) or
#: ``mean`` (the image's mean colour). ``none`` leaves the copy unchanged: the ablation
#: the tests compare against (a flat map).
FILLS = ("blur", "mean", "none")
#: Drops in cosine smaller than this are float rounding, not heat.
ROUNDING = 1e-5


@dataclass(frozen=True)
class OcclusionSettings:
    """How an explanation hides regions.

    ``grid`` cells per side; ``windows`` the window sides in cells (each slides by one
    cell); ``work_side`` the shorter side the image is reduced to first (the encoders
    see 224 pixels; smaller copies are faster to blur and preprocess); ``batch`` copies
    per forward pass."""

    grid: int = 6
    windows: tuple[int, ...] = (2, 3)
    fill: str = "blur"
    work_side: int = 256
    batch: int = 32

    def __post_init__(self) -> None:
        if not 2 <= self.grid <= 32:
            raise ValueError(f"grid must be 2 to 32 cells per side, not {self.grid}")
        if not self.windows or any(not 1 <= w <= self.grid for w in self.windows):
            raise ValueError(f"windows must be 1 to {self.grid} cells, not {self.windows}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {self.fill!r}")

    @property
    def copies(self) -> int:
        """Masked copies per explanation (forward passes, with the original: + 1)."""
        return sum((self.grid - w + 1) ** 2 for w in self.windows)


@dataclass(frozen=True)
class Heatmap:
    """Heat over one image: ``cells`` (grid, grid) float32, row-major from the top left,
    each the mean drop in cosine when a window covering it is hidden; ``base`` the
    cosine of the unmasked image as re-embedded here (it matches the stored score up to
    decoding and rounding)."""

    cells: np.ndarray
    base: float
    #: Size (width, height) of the image the heat lies over, in pixels.
    size: tuple[int, int]

    def normalised(self) -> np.ndarray:
        """(grid, grid) float32 in [0, 1]: heat over its maximum, negatives at 0; all 0
        when no region lowers the score."""
        positive = np.clip(self.cells, 0.0, None)
        top = float(positive.max())
        if top <= 1e-6:
            return np.zeros_like(positive)
        return (positive / top).astype(np.float32)

    def pixels(self, width: int, height: int) -> np.ndarray:
        """(height, width) float32 in [0, 1]: :meth:`normalised` smoothly resized
        (bilinear) to a picture of that size."""
        grid = Image.fromarray(self.normalised(), mode="F")
        smooth = grid.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(smooth, np.float32).clip(0.0, 1.0)

    def peak(self) -> tuple[float, float]:
        """The centre of the hottest cell as (x, y) fractions of the image; ties go
        to the first cell in row-major order."""
        grid = self.cells.shape[0]
        row, col = divmod(int(np.argmax(self.cells)), grid)
        return ((col + 0.5) / grid, (row + 0.5) / grid)


def working_copy(image: Image.Image, work_side: int) -> Image.Image:
    """RGB ``image`` with its shorter side reduced to ``work_side`` (never enlarged)."""
    image = image.convert("RGB")
    shorter = min(image.size)
    if shorter <= work_side:
        return image
    scale = work_side / shorter
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def cell_edges(length: int, grid: int) -> np.ndarray:
    """(grid + 1,) int: pixel boundaries of ``grid`` near-equal cells along ``length``."""
    return np.round(np.linspace(0, length, grid + 1)).astype(int)


def windows_of(settings: OcclusionSettings) -> list[tuple[int, int, int]]:
    """Every window as (row, col, side) in cells, smaller windows first, row-major."""
    return [
        (row, col, side)
        for side in settings.windows
        for row in range(settings.grid - side + 1)
        for col in range(settings.grid - side + 1)
    ]


def fill_of(image: Image.Image, settings: OcclusionSettings) -> np.ndarray:
    """(h, w, 3) uint8: what a hidden window shows."""
    pixels = np.asarray(image, np.uint8)
    if settings.fill == "mean":
        mean = pixels.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
        return np.broadcast_to(mean, pixels.shape).copy()
    if settings.fill == "none":
        return pixels.copy()
    radius = max(image.size) / settings.grid
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), np.uint8)


def occlusion_heatmap(
    encoder: Encoder,
    image: Image.Image,
    score: Scorer,
    settings: OcclusionSettings | None = None,
) -> Heatmap:
    """Heat over ``image`` (RGB) for the cosine ``score`` gives its embedding.

    ``score`` receives {space: (n, dims)} for n copies and returns their (n,) cosines;
    it is called once per batch, the first batch's first row being the unmasked image.
    Deterministic for a deterministic encoder."""
    settings = settings or OcclusionSettings()
    work = working_copy(image, settings.work_side)
    pixels = np.asarray(work, np.uint8)
    fill = fill_of(work, settings)
    xs, ys = cell_edges(work.width, settings.grid), cell_edges(work.height, settings.grid)
    windows = windows_of(settings)

    def copy(window: tuple[int, int, int] | None) -> np.ndarray:
        if window is None:
            return encoder.preprocess(work)
        row, col, side = window
        masked = pixels.copy()
        top, bottom = ys[row], ys[row + side]
        left, right = xs[col], xs[col + side]
        masked[top:bottom, left:right] = fill[top:bottom, left:right]
        return encoder.preprocess(Image.fromarray(masked))

    jobs: list[tuple[int, int, int] | None] = [None, *windows]
    scores = np.empty(len(jobs), np.float64)
    for start in range(0, len(jobs), settings.batch):
        chunk = jobs[start : start + settings.batch]
        embedded = encoder.embed_pixels(np.stack([copy(w) for w in chunk]))
        scores[start : start + len(chunk)] = np.asarray(score(embedded), np.float64)
    base = float(scores[0])
    drops = base - scores[1:]
    # Batched inference rounds differently from one image to the next (1e-7): below
    # this a drop is no drop, so that a change that hides nothing leaves a flat map.
    drops[np.abs(drops) < ROUNDING] = 0.0
    total = np.zeros((settings.grid, settings.grid), np.float64)
    covered = np.zeros_like(total)
    for (row, col, side), drop in zip(windows, drops, strict=True):
        total[row : row + side, col : col + side] += drop
        covered[row : row + side, col : col + side] += 1
    cells = (total / np.maximum(covered, 1)).astype(np.float32)
    return Heatmap(cells=cells, base=base, size=work.size)


def cosine_with(space: str, vector: np.ndarray) -> Scorer:
    """A scorer: each copy's vector in ``space`` against one unit ``vector`` (dims,)."""
    query = np.asarray(vector, np.float32)

    def score(embedded: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(embedded[space] @ query, np.float32)

    return score


def query_image_scorer(
    space: str,
    fixed: Sequence[tuple[float, np.ndarray]],
    weight: float,
    target: np.ndarray,
) -> Scorer:
    """A scorer for the query image's copies: the query vector made again as
    normalize(weight * copy + sum of the ``fixed`` (weight, vector) terms) in ``space``,
    against the result's unit ``target`` vector (dims,)."""
    rest = np.zeros_like(np.asarray(target, np.float32))
    for term_weight, vector in fixed:
        rest = rest + term_weight * np.asarray(vector, np.float32)
    result = np.asarray(target, np.float32)

    def score(embedded: dict[str, np.ndarray]) -> np.ndarray:
        queries = weight * embedded[space] + rest
        norms = np.maximum(np.linalg.norm(queries, axis=1), 1e-12)
        return np.asarray((queries @ result) / norms, np.float32)

    return score
