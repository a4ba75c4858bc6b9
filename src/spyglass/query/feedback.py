"""Relevance feedback and few-shot search: learn a better query from images marked good/bad.

Each method turns the query's terms plus ``Query.positives`` / ``Query.negatives`` (ids
of indexed images the user marked good / bad) into a query vector ``w`` and ranks the
index by ``w . x``. A linear model's ranking by ``w . x + b`` is the ranking by
``w . x``, so the store is searched with the unit vector ``w / ||w||``: training costs a
few milliseconds on about a thousand examples, the search is the usual one (exact, with
crops where the index has them), and scores stay cosines, comparable with other
methods'. ``svm-fusion`` alone searches twice (the marks' SVM in the image space, the
text in the joint space) and fuses z-scores.

Which space. A method that uses the text ranks where the text lives, the encoder's text
(joint) space. Feedback without text ranks in the encoder's image space
(``info.image_space``: for the bundled model its 1280-d CNN features), where images
compare best: in docs/methods.md the exemplar SVM on five exemplars of a Caltech-101
class gets mAP 0.83 there against 0.64 in the joint space (``svm-text`` without text).

Positive examples are the images marked good plus query images with a positive weight;
negative examples are the images marked bad, query images with a negative weight and,
for the learned models, ``PSEUDO_NEGATIVES`` images drawn at random from the index (most
of an index is not what one looks for; Malisiewicz et al. 2011). The draw is seeded by
the marked ids so the same feedback gives the same ranking (from 100,000 images, from a
pool drawn once per state of the index: ``pseudo_negatives``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.query.fusion import fused_ranking
from spyglass.query.methods import RankContext, Ranking, register, weighted_sum
from spyglass.query.sampling import RandomImages, random_images, sample_from_list
from spyglass.query.svm import fit_svm

#: Random index images used as negatives by the learned models.
PSEUDO_NEGATIVES = 1000
#: From this many rows in a space, pseudo-negatives are drawn by row position (work
#: bounded by ``PSEUDO_NEGATIVES``) instead of from the list of every visible image
#: (O(N): 1M owners listed, de-duplicated and filtered per query). Below it the spaces
#: are searched exactly (``VectorSearchSettings.approximate_from_rows``), so the list
#: costs less than the search that follows, and keeping it there keeps the rankings of
#: small collections, and the measurements in docs/methods.md, exactly as they were.
SAMPLE_BY_POSITION_FROM = 100_000
#: Images in the sample of negatives beyond those a query uses, so that the marked
#: images that happen to be in it can be left out (see ``pseudo_negatives``).
POOL_SPARE = 64
#: Rocchio's constants: SMART's classic alpha = 1, beta = 0.75, gamma = 0.15
#: (Manning, Raghavan & Schütze, Introduction to IR, section 9.1.1).
ROCCHIO_ALPHA = 1.0
ROCCHIO_BETA = 0.75
ROCCHIO_GAMMA = 0.15
#: Exemplar SVM: lambda/2 ||w||^2 over class-balanced hinge losses; lambda = 10 is
#: C = 0.1 in scikit-learn's terms, Karpathy's exemplar-SVM recipe.
SVM_LAMBDA = 10.0
#: Moll (2024): lambda and lambda_q as the post states them.
SVM_TEXT_LAMBDA = 10.0
SVM_TEXT_LAMBDA_Q = 1000.0
#: SeeSaw-style logistic model: prior w0 = SEESAW_SCALE * q, pulled by SEESAW_LAMBDA.
SEESAW_SCALE = 10.0
SEESAW_LAMBDA = 1.0
#: SeeSaw's reference model (``orm011/seesaw``, ``LogisticRegresionPT`` as its
#: experiments call it): reg_lambda = 1, classes balanced by a positive weight.
SEESAW_REFERENCE_LAMBDA = 1.0
#: Half-width of the quadratic part of the smoothed hinge (see ``smooth_hinge``).
HINGE_SMOOTHING = 0.1
#: ``svm-fusion``: the text's share of the fused score.
FUSION_TEXT_SHARE = 0.3
#: A SeeSaw model: (space, text query (dims,) or None, positives (p, dims), negatives
#: (n, dims)) -> w (dims,).
SeesawModel = Callable[[str, np.ndarray | None, np.ndarray, np.ndarray], np.ndarray]


# -- examples ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Examples:
    """Labelled vectors for a linear model.

    ``vectors`` (n, dims) unit rows, float32 (half the memory traffic of the two matrix
    products each step of the fit) or float64; ``labels`` (n,) float64 in {+1, -1};
    ``weights`` (n,) float64 per-example loss weights."""

    vectors: np.ndarray
    labels: np.ndarray
    weights: np.ndarray


def marked_examples(context: RankContext, space: str) -> tuple[np.ndarray, np.ndarray]:
    """(positives (p, dims), negatives (n, dims)) float32 in ``space``: images marked
    good / bad plus image terms with a positive / negative weight."""
    dims = context.info.spaces[space]
    positives = [context.positives.get(space, np.zeros((0, dims), np.float32))]
    negatives = [context.negatives.get(space, np.zeros((0, dims), np.float32))]
    for term in context.terms:
        if term.kind == "image" and space in term.vectors:
            target = positives if term.weight > 0 else negatives
            target.append(term.vectors[space].reshape(1, -1))
    return (
        np.concatenate(positives).astype(np.float32),
        np.concatenate(negatives).astype(np.float32),
    )


def pseudo_negatives(context: RankContext, space: str, count: int) -> np.ndarray:
    """(m, dims) float32: ``count`` random indexed images, the marked ones left out.

    Below ``SAMPLE_BY_POSITION_FROM`` rows they are drawn from the list of every visible
    image (:func:`sample_from_list`, O(N)), seeded by the marked ids. From it on they
    come from a sample of ``count + POOL_SPARE`` images drawn once per state of the
    index (:func:`random_images`), less the marked ones, thinned to ``count`` by a draw
    seeded by the marked ids: the same feedback draws the same images, and a query
    reads no rows for its negatives once the sample is in memory. Under filters they
    are drawn from the kept images (:func:`sample_among`), per query."""
    store = context.index.stores[space]
    marked = np.array(context.positive_ids + context.negative_ids, np.int64)
    if count <= 0:
        return np.zeros((0, store.dims), np.float32)
    if context.among is not None:
        # Filtered: the negatives stand for what is being ranked, the kept images.
        chosen = sample_among(context.among, count, marked)
    elif len(store) >= SAMPLE_BY_POSITION_FROM:
        return draw_from(random_images(context.index, space, count + POOL_SPARE), count, marked)
    else:
        chosen = sample_from_list(store, count, marked)
    if len(chosen) == 0:
        return np.zeros((0, store.dims), np.float32)
    return store.fetch(chosen).astype(np.float32)


def draw_from(sample: RandomImages, count: int, marked: np.ndarray) -> np.ndarray:
    """(m, dims) float32: ``count`` of the sample's vectors (all it has if fewer), none
    of a ``marked`` image's, chosen by a draw seeded by the sample's size and the marks."""
    keep = np.flatnonzero(~np.isin(sample.owners, marked))
    if len(keep) > count:
        rng = np.random.default_rng([len(sample.owners), *sorted(int(i) for i in marked)])
        keep = np.sort(rng.choice(keep, size=count, replace=False))
    return sample.vectors[keep]


def sample_among(among: np.ndarray, count: int, marked: np.ndarray) -> np.ndarray:
    """(m,) int64 sorted: ``count`` distinct ids of ``among`` (sorted; all of them if
    fewer), none of ``marked``, seeded like :func:`sample_from_list`."""
    owners = among[~np.isin(among, marked)] if len(marked) else among
    if len(owners) <= count:
        return owners.copy()
    rng = np.random.default_rng([len(owners), *sorted(int(i) for i in marked)])
    return np.sort(rng.choice(owners, count, replace=False))


def build_examples(
    positives: np.ndarray,
    marked_negatives: np.ndarray,
    random_negatives: np.ndarray,
    dtype: type[np.floating] = np.float32,
    balanced: bool = True,
) -> Examples:
    """Stack the examples and weigh them as an SVM's C * sum of losses, n examples in all.

    Images marked good and random images are balanced (scikit-learn's
    ``class_weight="balanced"``, the exemplar-SVM recipe): each side holds n/2. An image
    marked bad weighs what one marked good does: the user's marks count alike whichever
    way they go, and a few of them are not drowned by a thousand random images. With
    ``balanced=False`` every example weighs 1 (Moll's literal loss)."""
    # One copy: the thousand random rows are 5 MB at 1,280 dims, copied per query.
    vectors = np.concatenate([positives, marked_negatives, random_negatives], dtype=dtype)
    labels = np.concatenate(
        [np.ones(len(positives)), -np.ones(len(marked_negatives) + len(random_negatives))]
    )
    if not balanced:
        return Examples(vectors, labels, np.ones(len(vectors)))
    half = len(vectors) / 2
    per_mark = half / max(len(positives), 1)
    weights = np.concatenate(
        [
            np.full(len(positives) + len(marked_negatives), per_mark),
            np.full(len(random_negatives), half / max(len(random_negatives), 1)),
        ]
    )
    return Examples(vectors, labels, weights)


# -- losses -----------------------------------------------------------------------------

#: margin z (n,) -> (loss (n,), d loss / d z (n,))
Loss = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def smooth_hinge(z: np.ndarray, h: float = HINGE_SMOOTHING) -> tuple[np.ndarray, np.ndarray]:
    """The hinge max(0, 1 - z) with its corner rounded over 1 - h < z < 1 + h:

    0 for z >= 1 + h; (1 + h - z)^2 / (4h) in between; 1 - z for z <= 1 - h.
    It differs from the hinge by at most h/4 and has a continuous gradient, which
    L-BFGS needs."""
    loss = np.where(z >= 1 + h, 0.0, np.where(z <= 1 - h, 1 - z, (1 + h - z) ** 2 / (4 * h)))
    grad = np.where(z >= 1 + h, 0.0, np.where(z <= 1 - h, -1.0, -(1 + h - z) / (2 * h)))
    return loss, grad


def hinge(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hinge max(0, 1 - z) and a subgradient (-1 where z < 1, else 0): Moll's loss
    as written. L-BFGS on it stops where its line search can no longer descend, close to
    (not exactly at) the optimum; ``smooth_hinge`` is the differentiable variant."""
    return np.maximum(0.0, 1.0 - z), np.where(z < 1.0, -1.0, 0.0)


def logistic_loss(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(1 + exp(-z)) and its derivative -sigmoid(-z), computed stably."""
    return np.logaddexp(0.0, -z), -np.exp(-np.logaddexp(0.0, z))


# -- the linear model -------------------------------------------------------------------


@dataclass(frozen=True)
class LinearObjective:
    """J(w, b) = sum_i c_i loss(y_i (w . x_i + b))
    + l2 / 2 ||w - center||^2 + text_weight (1 - cos(text, w)).

    ``center`` is zero for the SVMs and the scaled text query for SeeSaw; ``text``
    (dims,) is the unit text query q, or None."""

    examples: Examples
    loss: Loss
    l2: float
    center: np.ndarray | None = None
    text: np.ndarray | None = None
    text_weight: float = 0.0

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        """params (dims + 1,) = [w, b] -> (J, dJ/dparams (dims + 1,))."""
        w, b = params[:-1], params[-1]
        x, y, c = self.examples.vectors, self.examples.labels, self.examples.weights
        # The two products run in the examples' dtype, everything else in float64. They
        # use einsum, not BLAS: on a busy 2-core machine OpenBLAS's threads made each
        # (1000 x 1280) product pair take 16 ms instead of einsum's 0.4 ms (measured).
        scores = np.einsum("ij,j->i", x, w.astype(x.dtype)).astype(np.float64)
        loss, dloss = self.loss(y * (scores + b))
        coefficient = c * dloss * y
        offset = w if self.center is None else w - self.center
        value = float(c @ loss) + 0.5 * self.l2 * float(offset @ offset)
        pulled = np.einsum("ij,i->j", x, coefficient.astype(x.dtype)).astype(np.float64)
        grad_w = pulled + self.l2 * offset
        if self.text is not None and self.text_weight:
            norm = max(float(np.linalg.norm(w)), 1e-12)
            cosine = float(self.text @ w) / norm
            value += self.text_weight * (1.0 - cosine)
            grad_w -= self.text_weight * (self.text / norm - cosine * w / norm**2)
        return value, np.append(grad_w, coefficient.sum())


def fit_linear(objective: LinearObjective, start: np.ndarray) -> np.ndarray:
    """Minimise ``objective`` from w = ``start`` (dims,), b = 0: returns the parameters
    [w, b] (dims + 1,) float64.

    The problem is convex except for the cosine term, which is smooth away from w = 0;
    starting from the text query (or the mean positive) keeps w well away from 0."""
    return minimize_lbfgs(objective, np.append(np.asarray(start, np.float64), 0.0))


def minimize_lbfgs(
    function: Callable[[np.ndarray], tuple[float, np.ndarray]],
    start: np.ndarray,
    *,
    memory: int = 10,
    max_iterations: int = 300,
    tolerance: float = 1e-8,
) -> np.ndarray:
    """Limited-memory BFGS (Nocedal & Wright, Numerical Optimization, algorithm 7.4 and
    7.5) with a backtracking Armijo line search; ``function`` returns (value, gradient).

    Written here rather than taken from SciPy: SciPy's L-BFGS-B runs its small vector
    operations through its own threaded BLAS, which on a busy machine made a 30-step
    fit take a second instead of a few milliseconds. Stops when an iteration lowers the
    value by less than ``tolerance`` (relative) or the gradient vanishes."""
    x = np.array(start, np.float64)
    value, grad = function(x)
    steps: list[np.ndarray] = []
    changes: list[np.ndarray] = []
    for _ in range(max_iterations):
        # Two-loop recursion: direction = -H grad with H the L-BFGS inverse Hessian.
        direction = -grad
        alphas = []
        for s, y in zip(reversed(steps), reversed(changes), strict=True):
            alpha = float(s @ direction) / float(y @ s)
            direction = direction - alpha * y
            alphas.append(alpha)
        if steps:
            direction = (
                direction * float(steps[-1] @ changes[-1]) / float(changes[-1] @ changes[-1])
            )
        else:
            direction = direction / max(float(np.linalg.norm(grad)), 1.0)
        for s, y, alpha in zip(steps, changes, reversed(alphas), strict=True):
            beta = float(y @ direction) / float(y @ s)
            direction = direction + (alpha - beta) * s
        slope = float(grad @ direction)
        if slope >= 0.0:  # not a descent direction: restart from the gradient
            steps.clear()
            changes.clear()
            direction = -grad / max(float(np.linalg.norm(grad)), 1.0)
            slope = float(grad @ direction)
        step = 1.0
        while True:
            candidate = x + step * direction
            new_value, new_grad = function(candidate)
            if new_value <= value + 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-12:
                return x
        s, y = candidate - x, new_grad - grad
        if float(s @ y) > 1e-12:
            steps.append(s)
            changes.append(y)
            if len(steps) > memory:
                steps.pop(0)
                changes.pop(0)
        done = value - new_value <= tolerance * max(abs(value), abs(new_value), 1.0)
        x, value, grad = candidate, new_value, new_grad
        if done or float(np.abs(grad).max()) < 1e-9:
            break
    return x


# -- the methods ------------------------------------------------------------------------


def feedback_space(context: RankContext) -> str:
    """Text in the query -> the text space; image-only feedback -> the image space."""
    return context.info.text_space if context.has_text else context.info.image_space


def text_query(context: RankContext, space: str) -> np.ndarray | None:
    """Unit (dims,) weighted sum of the text terms, or None if the query has no text."""
    texts = [t for t in context.terms if t.kind == "text"]
    if not texts or not any(t.weight > 0 for t in texts):
        return None
    return weighted_sum(texts, space)


def search_direction(context: RankContext, space: str, w: np.ndarray, k: int) -> Ranking:
    norm = float(np.linalg.norm(w))
    if not np.isfinite(norm) or norm < 1e-9:
        raise InvalidQuery("the marked images cancel each other out; mark a few more")
    return context.search(space, (w / norm).astype(np.float32), k)


def rocchio_vector(
    query: np.ndarray | None,
    positives: np.ndarray,
    negatives: np.ndarray,
    alpha: float = ROCCHIO_ALPHA,
    beta: float = ROCCHIO_BETA,
    gamma: float = ROCCHIO_GAMMA,
) -> np.ndarray:
    """q' = alpha q + beta mean(positives) - gamma mean(negatives), each part left out
    when it has no vectors. Inputs (dims,), (p, dims), (n, dims); returns (dims,) float64."""
    moved = np.zeros(positives.shape[1]) if query is None else alpha * np.asarray(query, np.float64)
    if len(positives):
        moved = moved + beta * positives.astype(np.float64).mean(axis=0)
    if len(negatives):
        moved = moved - gamma * negatives.astype(np.float64).mean(axis=0)
    return moved


@register(
    "rocchio",
    "Rocchio feedback: q + 0.75 mean(good) - 0.15 mean(bad)",
    tasks=("feedback",),
)
def rank_rocchio(context: RankContext, k: int) -> Ranking:
    """Rocchio relevance feedback (J. J. Rocchio, "Relevance feedback in information
    retrieval", The SMART Retrieval System, 1971):

        q' = alpha q + beta mean(x in good) - gamma mean(x in bad)

    with alpha = 1, beta = 0.75, gamma = 0.15. q is the query's weighted sum of text terms
    (image terms count as marked images: good with a positive weight, bad otherwise).
    """
    space = feedback_space(context)
    positives, negatives = marked_examples(context, space)
    query = text_query(context, space)
    if query is None and not len(positives):
        raise InvalidQuery("rocchio needs a text or at least one image marked good")
    return search_direction(context, space, rocchio_vector(query, positives, negatives), k)


def _examples_for(context: RankContext, space: str, what: str) -> tuple[Examples, np.ndarray]:
    positives, negatives = marked_examples(context, space)
    if not len(positives):
        raise InvalidQuery(f"{what} needs at least one image marked good (or a query image)")
    random = pseudo_negatives(context, space, PSEUDO_NEGATIVES)
    return build_examples(positives, negatives, random), positives


def exemplar_svm(examples: Examples, positives: np.ndarray, l2: float = SVM_LAMBDA) -> np.ndarray:
    """w (dims,) of the linear SVM: min sum_i c_i hinge(y_i (w . x_i + b)) + l2/2 ||w||^2,
    the hinge smoothed (``smooth_hinge``), solved by Newton's method (``query.svm``:
    a few steps where L-BFGS took about a hundred evaluations)."""
    start = positives.astype(np.float64).mean(axis=0)
    return fit_svm(
        examples.vectors, examples.labels, examples.weights, l2, start, HINGE_SMOOTHING
    ).w


@register(
    "svm",
    "exemplar SVM: good images against random and bad ones (linear, hinge loss)",
    tasks=("feedback",),
)
def rank_svm(context: RankContext, k: int) -> Ranking:
    """Exemplar SVM (T. Malisiewicz, A. Gupta, A. Efros, "Ensemble of Exemplar-SVMs for
    Object Detection and Beyond", ICCV 2011), used for search as in Moll (2024):

        min_{w,b}  sum_i c_i max(0, 1 - y_i (w . x_i + b)) + lambda/2 ||w||^2

    positives y = +1: the images marked good; negatives y = -1: those marked bad and
    ``PSEUDO_NEGATIVES`` random index images. Classes are balanced (``build_examples``),
    lambda = 10, the hinge is smoothed (``smooth_hinge``) and minimised by L-BFGS; then
    the index is ranked by w . x. Text terms are not used (see ``svm-text``).
    """
    space = context.info.image_space
    examples, positives = _examples_for(context, space, "svm")
    return search_direction(context, space, exemplar_svm(examples, positives), k)


def svm_with_text(
    examples: Examples,
    text: np.ndarray,
    l2: float = SVM_TEXT_LAMBDA,
    text_weight: float = SVM_TEXT_LAMBDA_Q,
    loss: Loss = smooth_hinge,
) -> np.ndarray:
    """w (dims,) minimising hinge + l2/2 ||w||^2 + text_weight (1 - cos(text, w)),
    started from the text query."""
    objective = LinearObjective(examples, loss, l2, text=text, text_weight=text_weight)
    return fit_linear(objective, np.asarray(text, np.float64))[:-1]


@register(
    "svm-text",
    "Moll's SVM + text as the post writes it: hinge, every example weight 1 (Moll 2024)",
    tasks=("feedback",),
)
def rank_svm_text(context: RankContext, k: int) -> Ranking:
    """Exemplar SVM + text query, after O. Moll, "Combining images with text for better
    CLIP-based image search" (2024, oscar-moll.com/blog/2024/combined-images-and-text),
    with the loss as the post writes it:

        min_{w,b}  sum_i hinge(y_i (w . x_i + b)) + lambda/2 ||w||^2
                   + lambda_q (1 - cos(q, w))

    every example of weight 1: the images marked good (y = +1), those marked bad and
    ``PSEUDO_NEGATIVES`` random index images (y = -1); q the text query (unit, joint
    space); lambda = 10, lambda_q = 1000; the plain hinge, L-BFGS from w = q. With a
    thousand unit-weight negatives against a few positives and lambda_q = 1000, w stays
    next to q: here it ranks nearly as the text alone does (docs/methods.md).
    ``svm-text-balanced`` is the variant that balances the classes. Without text this is
    the same loss without its text term, in the joint space; without marked images,
    plain text search.
    """
    return _svm_text(context, k, balanced=False, loss=hinge)


@register(
    "svm-text-balanced",
    "Moll's SVM + text with balanced classes and a smoothed hinge (a variant of svm-text)",
    tasks=("feedback",),
)
def rank_svm_text_balanced(context: RankContext, k: int) -> Ranking:
    """``svm-text``'s objective with two changes, not from the post:

        min_{w,b}  sum_i c_i smooth_hinge(y_i (w . x_i + b)) + lambda/2 ||w||^2
                   + lambda_q (1 - cos(q, w))

    the classes are balanced as for ``svm`` (``build_examples``: the images marked good
    hold half the loss, the random images the other half, an image marked bad weighs
    what one marked good does) and the hinge is smoothed (``smooth_hinge``) so that
    L-BFGS converges. lambda = 10, lambda_q = 1000, from w = q.
    """
    return _svm_text(context, k, balanced=True, loss=smooth_hinge)


def _svm_text(context: RankContext, k: int, balanced: bool, loss: Loss) -> Ranking:
    space = context.info.text_space
    text = text_query(context, space)
    positives, negatives = marked_examples(context, space)
    if text is None:
        if not len(positives):
            raise InvalidQuery("svm-text needs at least one image marked good (or a query image)")
        random = pseudo_negatives(context, space, PSEUDO_NEGATIVES)
        examples = build_examples(positives, negatives, random, balanced=balanced)
        if balanced:  # ``svm`` in the joint space
            return search_direction(context, space, exemplar_svm(examples, positives), k)
        objective = LinearObjective(examples, loss, SVM_LAMBDA)
        w = fit_linear(objective, positives.astype(np.float64).mean(axis=0))[:-1]
        return search_direction(context, space, w, k)
    if not len(positives) and not len(negatives):
        return search_direction(context, space, text, k)
    random = pseudo_negatives(context, space, PSEUDO_NEGATIVES)
    examples = build_examples(positives, negatives, random, balanced=balanced)
    return search_direction(context, space, svm_with_text(examples, text, loss=loss), k)


def seesaw_vector(
    examples: Examples,
    text: np.ndarray | None,
    scale: float = SEESAW_SCALE,
    l2: float = SEESAW_LAMBDA,
) -> np.ndarray:
    """w (dims,) of the logistic model regularised toward w0 = scale * q."""
    if text is None:
        center = None
        start = examples.vectors[examples.labels > 0].astype(np.float64).mean(axis=0)
    else:
        center = scale * np.asarray(text, np.float64)
        start = center
    objective = LinearObjective(examples, logistic_loss, l2, center=center)
    return fit_linear(objective, start)[:-1]


@register(
    "seesaw-style",
    "logistic model pulled toward 10 q, after SeeSaw (not its formulation: see seesaw)",
    tasks=("feedback",),
)
def rank_seesaw_style(context: RankContext, k: int) -> Ranking:
    """A SeeSaw-style feedback model (O. Moll, M. Favela, S. Madden, V. Gadepally,
    J. Cafarella, "SeeSaw: Interactive Ad-hoc Search Over Image Databases", PACMMOD /
    SIGMOD 2024, arXiv:2208.06497): logistic regression on the labelled images whose
    weights are kept near the text query's vector instead of near zero,

        min_{w,b}  sum_i c_i log(1 + exp(-y_i (w . x_i + b))) + lambda/2 ||w - s q||^2

    with s = 10 (q at the scale of a confident logit: a cosine gap of 0.1 is one unit of
    logit) and lambda = 1. Examples and weights as for ``svm``. Without text the prior is
    zero (plain L2-regularised logistic regression, in the image space). Not SeeSaw's
    own formulation (``seesaw``): no centring, an L2 pull toward s q instead of its norm
    and angle penalties, and the random images as negatives.
    """

    def model(space: str, text: np.ndarray | None, good: np.ndarray, bad: np.ndarray) -> np.ndarray:
        random = pseudo_negatives(context, space, PSEUDO_NEGATIVES)
        return seesaw_vector(build_examples(good, bad, random), text)

    return rank_by_seesaw_model(context, k, model)


def rank_by_seesaw_model(context: RankContext, k: int, model: SeesawModel) -> Ranking:
    """What the two SeeSaw models share: the space (``feedback_space``), the text query
    and the marked examples given to ``model``, which returns w; without marks, the text
    query itself. Raises ``InvalidQuery`` with neither a text nor an image marked good."""
    space = feedback_space(context)
    text = text_query(context, space)
    positives, negatives = marked_examples(context, space)
    if not len(positives) and text is None:
        raise InvalidQuery("seesaw needs a text or at least one image marked good")
    if text is not None and not len(positives) and not len(negatives):
        return search_direction(context, space, text, k)
    return search_direction(context, space, model(space, text, positives, negatives), k)


def seesaw_reference_vector(
    positives: np.ndarray,
    negatives: np.ndarray,
    text: np.ndarray | None,
    l2: float = SEESAW_REFERENCE_LAMBDA,
) -> np.ndarray:
    """w (dims,) float64 of SeeSaw's logistic model on centred features.

    With X the n labelled vectors (positives (p, dims) y = 1, negatives (m, dims)
    y = 0), mu their mean and q^ the unit text query:

        J(w) = 1/n sum_i c_i BCE(w . (x_i - mu), y_i)
               + l2/n ((||w|| - 1)^2 + ||w/||w|| - q^||^2)

    c_i = max(m, 1) / max(p, 1) for positives and 1 for negatives (classes balanced by a
    positive weight), no intercept. Without text the angle term is left out (the
    reference's "norm1" regulariser). Minimised by L-BFGS from w = q^ (or the unit
    mean positive)."""
    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), -np.ones(len(negatives))])
    n = len(x)
    centred = x - x.mean(axis=0)
    c = np.where(y > 0, max(len(negatives), 1) / max(len(positives), 1), 1.0)
    anchor = None if text is None else np.asarray(text, np.float64)
    if anchor is not None:
        anchor = anchor / max(float(np.linalg.norm(anchor)), 1e-12)
    reg = l2 / n

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = y * (centred @ w)
        loss, dloss = logistic_loss(z)
        value = float(c @ loss) / n
        grad = centred.T @ (c * dloss * y) / n
        norm = max(float(np.linalg.norm(w)), 1e-12)
        value += reg * (norm - 1.0) ** 2
        grad += reg * 2.0 * (norm - 1.0) * w / norm
        if anchor is not None:
            u = w / norm
            gap = u - anchor
            value += reg * float(gap @ gap)
            grad += reg * 2.0 / norm * (u * float(u @ anchor) - anchor)
        return value, grad

    if anchor is not None:
        start = anchor
    else:
        mean = positives.astype(np.float64).mean(axis=0)
        start = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return minimize_lbfgs(objective, start)


@register(
    "seesaw",
    "SeeSaw's logistic model: centred features, (|w|-1)^2 + angle to the text (Moll et al.)",
    tasks=("feedback",),
)
def rank_seesaw(context: RankContext, k: int) -> Ranking:
    """SeeSaw (O. Moll, M. Favela, S. Madden, V. Gadepally, J. Cafarella, "SeeSaw:
    Interactive Ad-hoc Search Over Image Databases", PACMMOD / SIGMOD 2024,
    arXiv:2208.06497), in the formulation of its reference code (``orm011/seesaw``,
    ``logistic_regression.py``): logistic regression on the labelled images only (the
    images marked good and bad, plus query images), features centred on their mean, no
    intercept, positives weighted n_bad / n_good, and the penalty

        lambda/n ((||w|| - 1)^2 + ||w/||w|| - q/||q|| ||^2)

    that keeps w a unit vector near the text query and lets the labels weigh more as
    they accumulate; lambda = 1 (``seesaw_reference_vector``). The index is ranked by
    w . x (centring shifts every score alike).

    Multiscale: where the index has crops (``spyglass index --crops``) an image is
    ranked by its best of whole image and crops, as for every method; the model is
    trained on whole-image vectors, since Spyglass's marks are per image, not the boxes
    SeeSaw's users draw. Without text it ranks in the image space without the angle
    term; without marks it is the text query.
    """
    return rank_by_seesaw_model(
        context, k, lambda _, text, good, bad: seesaw_reference_vector(good, bad, text)
    )


# -- late fusion: the marks where images compare best, the text where it lives ----------


@register(
    "svm-fusion",
    "exemplar SVM in the image space fused with the text in the joint space (late fusion)",
    tasks=("feedback",),
)
def rank_svm_fusion(context: RankContext, k: int) -> Ranking:
    """Late fusion of an exemplar SVM with the text query, for encoders whose best
    image-to-image space is not their text space (the bundled model's).

    The marks train ``svm``'s exemplar SVM w in the image space (Malisiewicz et al. 2011,
    lambda = 10); the text q stays in the joint space. Over the union of both top lists,
    each cosine standardised by its mean and spread over the collection (z, estimated on
    a random sample: ``fused_ranking``):

        s(x) = (1 - a) z(cos(w, x_image)) + a z(cos(q, x_joint)),  a = FUSION_TEXT_SHARE

    the score-level fusion of multimodal retrieval (P. K. Atrey et al., "Multimodal
    fusion for multimedia analysis: a survey", Multimedia Systems 2010). Without text it
    is ``svm``; with text but no image marked good, ``rocchio`` (the text, moved away
    from any images marked bad). Scores are fused z-scores, not cosines.
    """
    image_space, text_space = context.info.image_space, context.info.text_space
    text = text_query(context, text_space)
    positives, negatives = marked_examples(context, image_space)
    if text is None:
        return rank_svm(context, k)
    if not len(positives):
        return rank_rocchio(context, k)
    random = pseudo_negatives(context, image_space, PSEUDO_NEGATIVES)
    w = exemplar_svm(build_examples(positives, negatives, random), positives)
    w_unit = (w / max(float(np.linalg.norm(w)), 1e-12)).astype(np.float32)
    parts = [
        (image_space, w_unit, 1.0 - FUSION_TEXT_SHARE),
        (text_space, text.astype(np.float32), FUSION_TEXT_SHARE),
    ]
    return fused_ranking(context, parts, k)
