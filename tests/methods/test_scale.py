"""Every method and re-ranker does work per query that does not grow with the index.

The stores here are the real local store, recording what each query asks of it and
refusing to list every owner (``visible_owners``, O(N)). Each method runs on two
indexes of different sizes above ``SAMPLE_BY_POSITION_FROM``; what it fetches and the
depth it searches must stay under bounds that do not depend on the size. No timing:
speed is measured by ``spyglass bench methods``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.encoders.base import EncoderInfo
from spyglass.engine import Spyglass
from spyglass.query import compose, feedback, fusion, sampling
from spyglass.query.methods import EmbeddedTerm, RankContext, get_method
from spyglass.query.rerank import RERANK_DEPTH, get_reranker
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.settings import VectorSearchSettings
from spyglass.store.catalogue import Catalogue, NewImage
from spyglass.store.index import Index
from spyglass.store.local import LocalVectorStore

INFO = EncoderInfo("hand-made", "1", {"joint": 6, "image": 5}, "joint", "image")
#: Two sizes where spaces are searched approximately (from 100,000 rows by default).
SIZES = (100_000, 300_000)
K = 10


class CountingStore(LocalVectorStore):
    """The local store, recording the rows each call fetches and the depth of each
    search; listing every visible owner fails the test."""

    def __init__(self, folder: Path, space: str, dims: int) -> None:
        super().__init__(folder, space, dims, 0, writer=True)
        self.fetched: list[int] = []
        self.searched: list[int] = []

    def visible_owners(self) -> np.ndarray:
        raise AssertionError("a query listed every owner of the store: O(N) per query")

    def fetch(self, owners: np.ndarray) -> np.ndarray:
        self.fetched.append(int(np.size(owners)))
        return super().fetch(owners)

    def search(self, queries: np.ndarray, k: int, among: np.ndarray | None = None):  # type: ignore[no-untyped-def]
        self.searched.append(k)
        return super().search(queries, k, among=among)

    def reset(self) -> None:
        self.fetched.clear()
        self.searched.clear()


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def counting_index(folder: Path, size: int, seed: int = 0) -> Index:
    """An Index over counting stores of ``size`` random images (methods only search and
    fetch; no catalogue)."""
    rng = np.random.default_rng(seed)
    stores = {}
    for space, dims in INFO.spaces.items():
        store = CountingStore(folder, space, dims)
        store.add(np.arange(size), unit(rng.normal(size=(size, dims))))
        store.flush()
        store.set_hidden(range(size - 50, size))  # some removed images, never drawn
        stores[space] = store
    return Index(folder, None, INFO, stores)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n}-images")
def index(request, tmp_path_factory: pytest.TempPathFactory) -> Index:
    return counting_index(tmp_path_factory.mktemp("scale"), request.param)


def stored(index: Index, image_id: int) -> dict[str, np.ndarray]:
    return {s: index.stores[s].fetch(np.array([image_id]))[0] for s in INFO.spaces}


class DescribingEncoder:
    """Puts every image into the same words, embedded by table lookup: enough for
    WeiMoCIR's caption term to run (its cost, not its quality, is measured here)."""

    def describe_vectors(self, vectors):  # type: ignore[no-untyped-def]
        return ["a thing"] * len(next(iter(vectors.values())))

    def embed_texts(self, texts):  # type: ignore[no-untyped-def]
        return np.stack([unit(np.linspace(2.0, 1.0, 6)) for _ in texts])


def context_for(index: Index, kind: str) -> RankContext:
    """A text, image, image+text or marks query over ``index``, through a view of it that
    has derived nothing yet (feedback keeps its random images per index: every test
    starts cold)."""
    index = Index(index.folder, None, INFO, index.stores)  # type: ignore[arg-type]
    text = unit(np.linspace(1.0, 2.0, 6))
    terms = []
    if kind in ("text", "image+text", "marks"):
        terms.append(EmbeddedTerm("text", 1.0, {"joint": text}, "t"))
    if kind in ("image", "image+text"):
        terms.append(EmbeddedTerm("image", 1.0, stored(index, 17)))
    good, bad = ((3, 5, 8), (13,)) if kind == "marks" else ((), ())
    context = RankContext(
        index,
        INFO,
        terms,
        positive_ids=good,
        negative_ids=bad,
        encoder=DescribingEncoder(),  # type: ignore[arg-type]
    )
    for ids, target in ((good, context.positives), (bad, context.negatives)):
        for space in INFO.spaces:
            if ids:
                target[space] = np.stack([stored(index, i)[space] for i in ids])
    for store in index.stores.values():
        store.reset()  # type: ignore[attr-defined]
    return context


#: (method, kind of query, most rows one query may fetch, deepest search it may ask).
#: The learned models' first query also draws their random images (kept by the index):
#: PSEUDO_NEGATIVES + POOL_SPARE of them; late fusion draws FUSION_SAMPLE per space.
FUSION = 2 * max(K, fusion.FUSION_DEPTH)
NEGATIVES = feedback.PSEUDO_NEGATIVES + feedback.POOL_SPARE
CASES = [
    ("sum", "text", 0, K),
    ("sum", "image", 0, K),
    # Its caption term fetches the re-scored head's vectors once in every space.
    (
        "weimocir",
        "image+text",
        len(INFO.spaces) * compose.WEIMOCIR_DEPTH,
        max(K, compose.WEIMOCIR_DEPTH),
    ),
    ("slerp", "image+text", 0, K),
    ("late-fusion", "image+text", 2 * fusion.FUSION_SAMPLE + FUSION, fusion.FUSION_DEPTH),
    ("rocchio", "marks", 0, K),
    ("svm", "marks", NEGATIVES, K),
    ("svm-text", "marks", NEGATIVES, K),
    ("svm-text-balanced", "marks", NEGATIVES, K),
    ("seesaw", "marks", 0, K),  # SeeSaw's reference trains on the marked images only
    ("seesaw-style", "marks", NEGATIVES, K),
    ("svm-fusion", "marks", NEGATIVES + 2 * fusion.FUSION_SAMPLE + FUSION, fusion.FUSION_DEPTH),
]


@pytest.mark.parametrize(("method", "kind", "fetch_bound", "depth_bound"), CASES)
def test_a_method_fetches_and_searches_a_bounded_amount_whatever_the_size(
    index, method, kind, fetch_bound, depth_bound
) -> None:
    context = context_for(index, kind)
    ranking = get_method(method, "feedback" if kind == "marks" else kind)(context, K)
    assert len(ranking) == K
    stores = index.stores.values()
    fetched = sum(sum(s.fetched) for s in stores)  # type: ignore[attr-defined]
    depths = [k for s in stores for k in s.searched]  # type: ignore[attr-defined]
    assert fetched <= fetch_bound
    assert depths and max(depths) <= depth_bound
    if method == "weimocir":  # the caption term ran (it is sum without it)
        assert fetched > 0 and max(depths) == compose.WEIMOCIR_DEPTH
    hidden = set(range(len(index.stores["joint"]) - 50, len(index.stores["joint"])))
    assert not hidden & {i for i, _ in ranking}


@pytest.mark.parametrize(
    "method", ["svm", "svm-text", "svm-text-balanced", "seesaw-style", "svm-fusion"]
)
def test_learned_methods_draw_their_negatives_without_listing_the_index(index, method) -> None:
    """The learned models draw their random images by row position once per state of
    the index (PSEUDO_NEGATIVES + POOL_SPARE rows fetched by the first query, at every
    size), and a second query reads none of them again."""
    context = context_for(index, "marks")
    get_method(method, "feedback")(context, K)
    space = "joint" if method in ("svm-text", "svm-text-balanced", "seesaw-style") else "image"
    store = index.stores[space]
    assert store.fetched[0] == NEGATIVES  # type: ignore[attr-defined]
    for each in index.stores.values():
        each.reset()  # type: ignore[attr-defined]
    get_method(method, "feedback")(context, K)
    assert NEGATIVES not in store.fetched  # type: ignore[attr-defined]
    if method != "svm-fusion":  # which fetches the candidates its lists missed
        assert store.fetched == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["aqe", "kreciprocal"])
def test_rerankers_fetch_only_the_ranked_images(index, name) -> None:
    context = context_for(index, "image")
    ranking = get_method("sum", "image")(context, RERANK_DEPTH)
    for store in index.stores.values():
        store.reset()  # type: ignore[attr-defined]
    reranked = get_reranker(name, "image")(context, ranking)
    assert len(reranked) == RERANK_DEPTH
    fetched = [n for s in index.stores.values() for n in s.fetched]  # type: ignore[attr-defined]
    searched = [k for s in index.stores.values() for k in s.searched]  # type: ignore[attr-defined]
    assert fetched == [RERANK_DEPTH] and searched == []


def test_pseudo_negatives_are_visible_unmarked_distinct_and_seeded(index) -> None:
    context = context_for(index, "marks")
    store = index.stores["image"]
    marked = {3, 5, 8, 13}
    first = sampling.sample_by_position(store, 1000, np.array(sorted(marked)))
    again = sampling.sample_by_position(store, 1000, np.array(sorted(marked)))
    assert first is not None and again is not None
    np.testing.assert_array_equal(first, again)
    assert len(set(first.tolist())) == 1000 and np.all(np.diff(first) > 0)
    size = len(store)
    assert not marked & set(first.tolist())
    assert not set(range(size - 50, size)) & set(first.tolist())
    other = sampling.sample_by_position(store, 1000, np.array([3, 5]))
    assert other is not None and not np.array_equal(first, other)
    # A query's negatives: rows of the index's random images, none of them marked.
    sample = sampling.random_images(context.index, "image", NEGATIVES)
    assert len(set(sample.owners.tolist())) == NEGATIVES
    assert not set(range(size - 50, size)) & set(sample.owners.tolist())
    np.testing.assert_array_equal(sample.vectors, store.fetch(sample.owners))
    vectors = feedback.pseudo_negatives(context, "image", 1000)
    assert len(vectors) == 1000
    row_of = {
        row.tobytes(): owner
        for row, owner in zip(sample.vectors, sample.owners.tolist(), strict=True)
    }
    drawn = [row_of[row.tobytes()] for row in vectors]
    assert len(set(drawn)) == 1000 and not marked & set(drawn)
    np.testing.assert_array_equal(vectors, feedback.pseudo_negatives(context, "image", 1000))
    other_marks = RankContext(context.index, INFO, [], positive_ids=(3, 5))
    assert not np.array_equal(vectors, feedback.pseudo_negatives(other_marks, "image", 1000))


def test_bounded_sampling_starts_where_search_stops_being_exact() -> None:
    """Below the approximate store's threshold every search scores every row anyway;
    from it on, nothing a query does may grow with the rows."""
    assert VectorSearchSettings().approximate_from_rows >= feedback.SAMPLE_BY_POSITION_FROM


# -- the sampling rule --------------------------------------------------------------------


class CountedRows:
    """Row -> owner lookups, counting the positions looked up."""

    def __init__(self, owners: np.ndarray) -> None:
        self.owners = owners
        self.looked_up = 0

    def __len__(self) -> int:
        return len(self.owners)

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        self.looked_up += int(np.size(positions))
        return self.owners[positions]


class RowsOnly:
    """A store that only maps rows to owners and knows its hidden owners."""

    dims = 2

    def __init__(self, owners: np.ndarray, hidden: set[int]) -> None:
        self._rows = CountedRows(owners)
        self._hidden = hidden

    @property
    def looked_up(self) -> int:
        return self._rows.looked_up

    def __len__(self) -> int:
        return len(self._rows)

    def owners(self) -> CountedRows:
        return self._rows

    def hidden_owners(self) -> set[int]:
        return self._hidden


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 200_000),
    count=st.integers(1, 1500),
    hidden_share=st.sampled_from([0.0, 0.01, 0.5, 0.9, 0.999]),
    marks=st.lists(st.integers(0, 199_999), max_size=12),
    seed=st.integers(0, 3),
)
def test_sampling_by_position_is_valid_seeded_and_bounded(
    rows, count, hidden_share, marks, seed
) -> None:
    rng = np.random.default_rng(seed)
    owners = np.arange(rows, dtype=np.int64) * 3 + 7  # ids are not row numbers
    hidden = {int(o) for o in owners[rng.random(rows) < hidden_share]}
    marked = np.array([int(owners[m % rows]) for m in marks], np.int64)
    store = RowsOnly(owners, hidden)
    chosen = sampling.sample_by_position(store, count, marked)  # type: ignore[arg-type]
    # Work: O(count) positions, never the rows.
    assert store.looked_up <= sampling.SAMPLE_ROUNDS * (18 * count + 8)
    again = sampling.sample_by_position(RowsOnly(owners, hidden), count, marked)  # type: ignore[arg-type]
    if chosen is None:
        assert again is None
        return
    assert again is not None
    np.testing.assert_array_equal(chosen, again)
    assert len(chosen) == count and np.all(np.diff(chosen) > 0)
    assert set(chosen.tolist()) <= set(owners.tolist()) - hidden - set(marked.tolist())


@pytest.mark.parametrize("rows", [10_000, 100_000, 1_000_000])
def test_sampling_by_position_finds_enough_when_most_images_are_visible(rows) -> None:
    owners = np.arange(rows, dtype=np.int64)
    hidden = set(range(0, rows, 3))  # a third removed
    chosen = sampling.sample_by_position(RowsOnly(owners, hidden), 1000, np.array([1, 2]))  # type: ignore[arg-type]
    assert chosen is not None and len(chosen) == 1000


def test_sampling_by_position_is_uniform_over_visible_owners() -> None:
    """Every visible, unmarked owner is about equally likely (chi-square over seeds)."""
    owners = np.arange(40, dtype=np.int64)
    hidden = {0, 1, 2, 3}
    counts = np.zeros(40)
    for seed in range(400):
        chosen = sampling.sample_by_position(RowsOnly(owners, hidden), 9, np.array([seed + 40]))  # type: ignore[arg-type]
        assert chosen is not None
        counts[chosen] += 1
    visible = counts[4:]
    assert counts[:4].sum() == 0
    expected = visible.sum() / len(visible)
    chi_square = float(((visible - expected) ** 2 / expected).sum())
    assert chi_square < 70  # 35 degrees of freedom: p < 0.001 above 66.6


def test_small_collections_keep_the_listed_draw(tmp_path) -> None:
    """Below SAMPLE_BY_POSITION_FROM the draw is the one every collection had before (the
    list of visible owners, seeded by its length and the marks), so that small
    collections rank exactly as they did."""
    store = LocalVectorStore(tmp_path, "joint", 6, 0, writer=True)
    store.add(np.arange(5000), unit(np.random.default_rng(3).normal(size=(5000, 6))))
    store.flush()
    store.set_hidden([10, 11])
    index = Index(tmp_path, None, INFO, {"joint": store})  # type: ignore[arg-type]
    context = RankContext(index, INFO, [], positive_ids=(4, 9), negative_ids=(7,))
    drawn = feedback.pseudo_negatives(context, "joint", 1000)
    owners = store.visible_owners()
    owners = owners[~np.isin(owners, [4, 9, 7])]
    rng = np.random.default_rng([len(owners), 4, 7, 9])
    expected = np.sort(rng.choice(owners, size=1000, replace=False))
    np.testing.assert_array_equal(drawn, store.fetch(expected))


# -- through the engine -------------------------------------------------------------------


class TableEncoder:
    """An encoder that embeds texts by table lookup (no model)."""

    info = INFO

    def __init__(self) -> None:
        self.vectors = {"t": unit(np.linspace(1.0, 2.0, 6))}

    def preprocess(self, image):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def embed_pixels(self, pixels):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def embed_texts(self, texts):  # type: ignore[no-untyped-def]
        return np.stack([self.vectors[t] for t in texts])


def test_engine_searches_list_nothing_and_count_nothing(tmp_path, monkeypatch) -> None:
    """``Spyglass.search`` answers every kind of query without listing the owners of a
    space or counting the catalogue's rows (both O(N) per query)."""
    size = 3000
    rng = np.random.default_rng(5)
    with Index.open_for_writing(tmp_path, INFO) as writer:
        images = [NewImage(f"h{i}", 8, 8, "JPEG") for i in range(size)]
        files = [(f"/x/{i}.jpg", 1, 0, i) for i in range(size)]
        vectors = {s: unit(rng.normal(size=(size, d))) for s, d in INFO.spaces.items()}
        writer.commit(images, vectors, files)

    def forbidden(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("O(N) work in a query")

    monkeypatch.setattr(feedback, "SAMPLE_BY_POSITION_FROM", 1)
    monkeypatch.setattr(LocalVectorStore, "visible_owners", forbidden)
    monkeypatch.setattr(Catalogue, "counts", forbidden)
    text, image = TextTerm("t"), ImageTerm(image_id=17)
    queries = [
        Query((text,), k=K),
        Query((image,), k=K),  # default re-ranking: k-reciprocal over the top 300
        Query((image, text), k=K),  # default: sum
        Query((text,), k=K, positives=(3, 5), negatives=(8,)),  # default: svm-fusion
        Query((), k=K, positives=(3, 5)),  # marks alone
    ]
    with Spyglass(TableEncoder(), Index.open(tmp_path)) as engine:  # type: ignore[arg-type]
        for query in queries:
            assert len(engine.search(query)) == K
