"""The map's list of images is read once per state of the index, not on every request
(listing every image is O(N): about a second at 1M), and read again when images die."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spyglass.server.atlas import CollectionMap
from spyglass.store.index import Index


def test_the_sample_is_kept_until_the_images_change(sample_photos_index: Path) -> None:
    index = Index.open(sample_photos_index)
    try:
        store = index.stores[index.info.image_space]
        listed = []
        real = store.visible_owners

        def counting() -> np.ndarray:
            listed.append(1)
            return real()

        store.visible_owners = counting  # type: ignore[method-assign]
        atlas = CollectionMap(index, None, max_points=10)
        first = atlas.state(start=False)
        atlas.state(start=False)
        atlas.state(start=False)
        assert len(listed) == 1
        assert first.message.startswith("10 images")  # a sample of the 14

        gone = int(real()[0])
        index._apply_alive({gone}, set())  # as a refresh does when its files are deleted
        atlas.state(start=False)
        assert len(listed) == 2
        ids, total = atlas._ids()
        assert total == 13 and gone not in ids.tolist()
    finally:
        index.close()
