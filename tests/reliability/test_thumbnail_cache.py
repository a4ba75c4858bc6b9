"""One failed write does not turn the thumbnail cache off for the life of the server:
after a pause it writes to disk again."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app
from spyglass.store.index import Index


def test_the_disk_cache_comes_back_after_a_failed_write(
    sample_photos_index: Path, sample_photos: Path, bundled: Encoder, tmp_path: Path
) -> None:
    engine = Spyglass(bundled, Index.open(sample_photos_index))
    settings = ServerSettings.for_binding("127.0.0.1", 8000, None, cache_dir=tmp_path / "cache")
    with TestClient(create_app(engine, settings), base_url="http://127.0.0.1") as client:
        thumbnails = client.app.state.spyglass.thumbnails  # type: ignore[attr-defined]
        ids = []
        for name in ("coffee.png", "horse.png"):
            found = client.get("/api/images/lookup", params={"path": str(sample_photos / name)})
            ids.append(found.json()["id"])
        blocker = thumbnails.folder / "256"  # a file where the size folder must go
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_bytes(b"")
        thumbnails.retry_seconds = 0.0  # the pause after a failed write (60 s by default)
        first = client.get(f"/api/images/{ids[0]}/thumbnail")
        assert first.status_code == 200  # served from memory
        assert not thumbnails.folder.joinpath("256").is_dir()
        blocker.unlink()
        second = client.get(f"/api/images/{ids[1]}/thumbnail")
        assert second.status_code == 200
        on_disk = thumbnails.path_for(thumbnails.gate.content_hash(ids[1]), 256)
        assert on_disk.read_bytes() == second.content
    engine.close()
