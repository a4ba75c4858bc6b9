// The results grid, virtualised: only the rows in view (plus a margin) exist in the
// DOM, and tiles are recycled as you scroll, so 10,000 loaded results cost the same
// few hundred elements as 50. Thumbnails load only for tiles in view.

const MIN_TILE = 184;
const GAP = 12;
const PAD = 18;
const META = 26;
const MARGIN_ROWS = 2;
const STATUS_HEIGHT = 44;
// On a phone-sized grid: smaller tiles and margins, so that two columns fit.
const NARROW = 560;
const NARROW_TILE = 150;
const NARROW_PAD = 8;

/** The file name with its folder ("airplanes/image_0051.jpg"): names alone repeat. */
function shortName(path) {
  return path.split("/").filter(Boolean).slice(-2).join("/");
}

export class ResultGrid {
  /**
   * @param scroller the scrolling element; sizer: its child whose height is the grid's
   * @param handlers {search(item), open(item), mark(item, kind), markOf(id), needMore()},
   * and optionally {explain(item), explanationOf(id)}: the "why it matched" toggle
   */
  constructor(scroller, sizer, handlers) {
    this.scroller = scroller;
    this.sizer = sizer;
    this.handlers = handlers;
    this.items = [];
    this.hasMore = false;
    this.loading = false;
    this.live = new Map(); // item index -> tile element
    this.spare = [];
    this.columns = 1;
    this.pad = PAD;
    this.tileWidth = MIN_TILE;
    this.tileHeight = MIN_TILE;
    this.status = document.createElement("div");
    this.status.className = "grid-status";
    this.sizer.appendChild(this.status);
    this.frame = 0;
    scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => {
      this.measure();
      this.schedule();
    }).observe(scroller);
    sizer.addEventListener("click", (event) => this.onClick(event));
    this.measure();
  }

  get size() {
    return this.items.length;
  }

  setItems(items, hasMore) {
    this.items = items.slice();
    this.hasMore = hasMore;
    this.loading = false;
    this.scroller.scrollTop = 0;
    for (const [index, tile] of this.live) this.recycle(index, tile);
    this.measure();
    this.schedule();
  }

  append(items, hasMore) {
    this.items.push(...items);
    this.hasMore = hasMore;
    this.loading = false;
    this.measure();
    this.schedule();
  }

  setLoading(loading) {
    this.loading = loading;
    this.renderStatus();
  }

  clear() {
    this.setItems([], false);
  }

  /** Re-draw the good/bad state of the tiles in view. */
  refreshMarks() {
    for (const [index, tile] of this.live) this.paintMark(tile, this.items[index]);
  }

  measure() {
    const width = this.scroller.clientWidth || 800;
    const minTile = width < NARROW ? NARROW_TILE : MIN_TILE;
    this.pad = width < NARROW ? NARROW_PAD : PAD;
    const inner = Math.max(minTile, width - this.pad * 2);
    this.columns = Math.max(1, Math.floor((inner + GAP) / (minTile + GAP)));
    this.tileWidth = (inner - GAP * (this.columns - 1)) / this.columns;
    this.tileHeight = Math.round(this.tileWidth * 0.78) + META;
    const rows = Math.ceil(this.items.length / this.columns);
    const height = this.pad + rows * (this.tileHeight + GAP) + STATUS_HEIGHT;
    this.sizer.style.height = `${this.items.length ? height : 0}px`;
    this.status.style.top = `${this.pad + rows * (this.tileHeight + GAP)}px`;
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  /** The item indexes in view, with a margin of rows: [first, last). */
  visibleRange() {
    const rowHeight = this.tileHeight + GAP;
    const top = this.scroller.scrollTop - this.pad;
    const firstRow = Math.max(0, Math.floor(top / rowHeight) - MARGIN_ROWS);
    const lastRow = Math.ceil((top + this.scroller.clientHeight) / rowHeight) + MARGIN_ROWS;
    return [firstRow * this.columns, Math.min(this.items.length, lastRow * this.columns)];
  }

  render() {
    const [first, last] = this.visibleRange();
    for (const [index, tile] of this.live) {
      if (index < first || index >= last) this.recycle(index, tile);
    }
    for (let index = first; index < last; index++) {
      let tile = this.live.get(index);
      if (!tile) {
        tile = this.spare.pop() || this.makeTile();
        this.fill(tile, index);
        if (!tile.parentNode) this.sizer.appendChild(tile);
        this.live.set(index, tile);
      }
      this.place(tile, index);
    }
    this.renderStatus();
    const nearEnd = last >= this.items.length - this.columns * 4;
    if (nearEnd && this.hasMore && !this.loading && this.items.length) {
      this.loading = true;
      this.renderStatus();
      this.handlers.needMore();
    }
  }

  renderStatus() {
    if (!this.items.length) {
      this.status.textContent = "";
    } else if (this.loading) {
      this.status.textContent = "Loading more…";
    } else if (this.hasMore) {
      this.status.textContent = "";
    } else {
      this.status.textContent = `End of results · ${this.items.length.toLocaleString()} shown`;
    }
  }

  makeTile() {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.tabIndex = 0;
    tile.setAttribute("role", "button");
    tile.innerHTML =
      '<img alt="" decoding="async" draggable="false">' +
      '<img class="heat" alt="Why it matched: heatmap" draggable="false" hidden>' +
      '<span class="placeholder" hidden>Not shown: the file lies outside the indexed folders</span>' +
      '<span class="rank"></span>' +
      '<span class="group" hidden></span>' +
      '<div class="marks">' +
      '<button type="button" class="mark-good" title="Mark as good (more like this)" aria-label="Mark as good">✓</button>' +
      '<button type="button" class="mark-bad" title="Mark as bad (less like this)" aria-label="Mark as bad">✕</button>' +
      "</div>" +
      '<button type="button" class="open" title="View larger" aria-label="View larger">⤢</button>' +
      '<button type="button" class="explain" title="Why it matched: which regions drive the score" aria-label="Why it matched" aria-pressed="false">◎</button>' +
      '<div class="meta"><span class="score"></span><span class="name"></span></div>';
    tile.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target === tile) {
        const item = this.items[Number(tile.dataset.index)];
        if (item) this.handlers.search(item);
      }
    });
    return tile;
  }

  fill(tile, index) {
    const item = this.items[index];
    tile.dataset.index = String(index);
    tile.dataset.id = String(item.id);
    const img = tile.firstChild;
    img.removeAttribute("src");
    if (item.thumbnail) img.src = item.thumbnail;
    img.hidden = !item.thumbnail;
    tile.querySelector(".placeholder").hidden = Boolean(item.thumbnail);
    tile.querySelector(".rank").textContent = `#${item.rank}`;
    tile.querySelector(".score").textContent = item.score.toFixed(3);
    // With near-duplicates hidden, a tile stands for its group.
    const group = tile.querySelector(".group");
    const others = (item.group_size || 1) - 1;
    group.hidden = others < 1;
    group.textContent = others > 0 ? `+${others}` : "";
    group.title = others > 0 ? `${others} near-duplicate${others > 1 ? "s" : ""} hidden` : "";
    const name = tile.querySelector(".name");
    name.textContent = shortName(item.path);
    // score: similarity to the query; rank_score (when the server sends it): the value
    // the method ranked by, which need not be a similarity.
    const ranked = typeof item.rank_score === "number" ? ` · rank score ${item.rank_score.toFixed(4)}` : "";
    tile.title = `${item.path}\n${item.width}×${item.height} · score ${item.score.toFixed(4)}${ranked}\nClick to search by this image`;
    this.paintMark(tile, item);
    this.paintExplanation(tile, item);
  }

  /** Show or hide the tile's heatmap overlay (the image with its heat, same shape). */
  paintExplanation(tile, item) {
    const url = this.handlers.explanationOf ? this.handlers.explanationOf(item.id) : null;
    const heat = tile.querySelector(".heat");
    if (url && heat.getAttribute("src") !== url) heat.src = url;
    if (!url) heat.removeAttribute("src");
    heat.hidden = !url;
    tile.classList.toggle("explained", Boolean(url));
    tile.querySelector(".explain").setAttribute("aria-pressed", String(Boolean(url)));
  }

  /** Re-draw the heatmap overlays of the tiles in view. */
  refreshExplanations() {
    for (const [index, tile] of this.live) this.paintExplanation(tile, this.items[index]);
  }

  /** Mark a tile as waiting for its explanation. */
  setExplaining(id, waiting) {
    for (const tile of this.live.values()) {
      if (tile.dataset.id === String(id)) tile.classList.toggle("explaining", waiting);
    }
  }

  paintMark(tile, item) {
    const mark = this.handlers.markOf(item.id);
    tile.classList.toggle("good", mark === "good");
    tile.classList.toggle("bad", mark === "bad");
  }

  place(tile, index) {
    const row = Math.floor(index / this.columns);
    const column = index % this.columns;
    tile.style.width = `${this.tileWidth}px`;
    tile.style.height = `${this.tileHeight}px`;
    tile.style.transform = `translate(${this.pad + column * (this.tileWidth + GAP)}px, ${this.pad + row * (this.tileHeight + GAP)}px)`;
  }

  recycle(index, tile) {
    this.live.delete(index);
    tile.remove();
    this.spare.push(tile);
  }

  onClick(event) {
    const tile = event.target.closest(".tile");
    if (!tile) return;
    const item = this.items[Number(tile.dataset.index)];
    if (!item) return;
    const button = event.target.closest("button");
    if (button && button.classList.contains("mark-good")) {
      this.handlers.mark(item, "good");
    } else if (button && button.classList.contains("mark-bad")) {
      this.handlers.mark(item, "bad");
    } else if (button && button.classList.contains("open")) {
      this.handlers.open(item);
    } else if (button && button.classList.contains("explain")) {
      if (this.handlers.explain) this.handlers.explain(item);
    } else {
      this.handlers.search(item);
    }
    this.paintMark(tile, item);
  }
}
