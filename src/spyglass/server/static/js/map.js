// The collection map: every image as a point placed by t-SNE (similar images lie
// close), coloured by its group; the legend names each group by words. Drawn on one
// canvas, so 20,000 points cost no DOM at all. Zoomed in (or with few points in view)
// the images themselves are drawn: one per patch of the screen, so they never pile
// up, over the dots of the rest. The current top results are highlighted. Scroll
// zooms, dragging pans, a click searches by the image under the pointer.

import { CLUSTER_COLOURS } from "./clusters.js";

const HIT_RADIUS = 7;
// Every point in view gets its image when at most this many are in view...
const THUMB_LIMIT = 260;
// ...and from this zoom on, one image per screen cell whatever the number.
const THUMB_ZOOM = 2.5;
const THUMB_SIZE = 40;
const CELL = THUMB_SIZE + 6;
const DOT_ALPHA = "b0"; // hex alpha of the group colour for plain dots

export class CollectionMapView {
  /**
   * status: {box, text, bar} the status line and its progress bar; legend: the legend's
   * element; handlers: {search(id), hover(id|null, event)}
   */
  constructor(canvas, status, legend, handlers) {
    this.canvas = canvas;
    this.status = status;
    this.legend = legend;
    this.handlers = handlers;
    this.points = null; // {ids, x, y, group}
    this.groups = [];
    this.focus = null; // a group brought forward from the legend
    this.shown = []; // indexes of the points drawn as images, for hit-testing
    this.highlight = new Map(); // id -> rank
    this.view = { scale: 1, dx: 0, dy: 0 };
    this.drag = null;
    this.hovered = null;
    this.buckets = null;
    this.thumbs = new Map(); // id -> {image, ready, failed}
    this.thumbMode = false;
    this.frameRequest = 0;
    new ResizeObserver(() => this.draw()).observe(canvas);
    canvas.addEventListener("wheel", (event) => this.onWheel(event), { passive: false });
    canvas.addEventListener("pointerdown", (event) => this.onDown(event));
    canvas.addEventListener("pointermove", (event) => this.onMove(event));
    canvas.addEventListener("pointerup", (event) => this.onUp(event));
    canvas.addEventListener("pointerleave", () => this.setHovered(null));
    canvas.addEventListener("dblclick", () => {
      this.view = { scale: 1, dx: 0, dy: 0 };
      this.draw();
    });
  }

  get ready() {
    return this.points !== null;
  }

  /** A line of status; with a fraction (0..1), a progress bar under it. */
  setStatus(text, fraction = null) {
    this.status.text.textContent = text;
    this.status.box.hidden = !text;
    this.status.bar.hidden = fraction === null;
    if (fraction !== null) this.status.bar.value = fraction;
  }

  setPoints(body) {
    const group = body.group && body.group.length === body.ids.length ? body.group : body.ids.map(() => 0);
    this.points = { ids: body.ids, x: body.x, y: body.y, group };
    this.groups = body.groups || [];
    this.index = new Map(body.ids.map((id, i) => [id, i]));
    for (const id of body.no_preview || []) this.thumbs.set(id, { ready: false, failed: true });
    const sampled = body.count < body.total ? ` (a sample of ${body.total.toLocaleString()})` : "";
    this.setStatus(`${body.count.toLocaleString()} images${sampled} · laid out in ${body.seconds}s`);
    this.buildBuckets();
    this.renderLegend();
    this.draw();
  }

  colour(group) {
    return CLUSTER_COLOURS[group % CLUSTER_COLOURS.length];
  }

  /** What the colours mean: each group by its words and size; a click brings it forward. */
  renderLegend() {
    const entries = this.groups.map((group) => {
      const entry = document.createElement("button");
      entry.type = "button";
      entry.dataset.group = String(group.id);
      const dot = document.createElement("i");
      dot.style.background = this.colour(group.id);
      const words = document.createElement("span");
      words.className = "words";
      words.textContent = group.words.length ? group.words.slice(0, 2).join(", ") : `Group ${group.id + 1}`;
      const size = document.createElement("span");
      size.className = "size";
      size.textContent = group.size.toLocaleString();
      entry.append(dot, words, size);
      entry.title = group.words.length ? `Nearest words: ${group.words.join(", ")}` : "";
      entry.addEventListener("click", () => {
        this.focus = this.focus === group.id ? null : group.id;
        for (const other of this.legend.querySelectorAll("button")) {
          other.classList.toggle("active", Number(other.dataset.group) === this.focus);
        }
        this.draw();
      });
      return entry;
    });
    const title = document.createElement("div");
    title.className = "legend-title";
    title.textContent = "Groups of similar images, named by their nearest words";
    const key = document.createElement("div");
    key.className = "legend-key muted";
    key.innerHTML = '<i class="ring"></i> top results of the search · zoom in to see the images';
    this.legend.replaceChildren(title, ...entries, key);
    this.legend.hidden = this.groups.length === 0;
  }

  setHighlight(items) {
    this.highlight = new Map(items.map((item) => [item.id, item.rank]));
    this.draw();
  }

  buildBuckets() {
    // A 64x64 grid over [0, 1]^2 for hit-testing without scanning every point.
    const size = 64;
    const buckets = new Map();
    const { x, y } = this.points;
    for (let i = 0; i < x.length; i++) {
      const key = Math.min(size - 1, Math.floor(x[i] * size)) * size + Math.min(size - 1, Math.floor(y[i] * size));
      if (!buckets.has(key)) buckets.set(key, []);
      buckets.get(key).push(i);
    }
    this.buckets = { size, map: buckets };
  }

  frame() {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    const side = Math.min(width, height) - 48;
    const left = (width - side) / 2;
    const top = (height - side) / 2;
    const { scale, dx, dy } = this.view;
    return {
      width, height,
      toScreen: (x, y) => [left + (x * side - side / 2) * scale + side / 2 + dx, top + (y * side - side / 2) * scale + side / 2 + dy],
      toMap: (sx, sy) => [((sx - left - side / 2 - dx) / scale + side / 2) / side, ((sy - top - side / 2 - dy) / scale + side / 2) / side],
      pixel: side * scale,
    };
  }

  /** Redraw at the next animation frame (thumbnails arrive one by one). */
  schedule() {
    if (this.frameRequest) return;
    this.frameRequest = requestAnimationFrame(() => {
      this.frameRequest = 0;
      this.draw();
    });
  }

  hasPreview(id) {
    const entry = this.thumbs.get(id);
    return !(entry && entry.failed);
  }

  thumbnail(id) {
    let entry = this.thumbs.get(id);
    if (!entry) {
      entry = { image: new Image(), ready: false, failed: false };
      entry.image.onload = () => {
        entry.ready = true;
        this.schedule();
      };
      entry.image.onerror = () => {
        entry.failed = true; // a file the server will not show: it stays a dot
      };
      entry.image.src = `/api/images/${id}/thumbnail?size=128`;
      this.thumbs.set(id, entry);
    }
    return entry;
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return;
    if (this.canvas.width !== Math.round(width * ratio)) this.canvas.width = Math.round(width * ratio);
    if (this.canvas.height !== Math.round(height * ratio)) this.canvas.height = Math.round(height * ratio);
    const context = this.canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    if (!this.points) return;
    const { toScreen } = this.frame();
    const { ids, x, y, group } = this.points;
    const inView = [];
    for (let i = 0; i < ids.length; i++) {
      const [sx, sy] = toScreen(x[i], y[i]);
      if (sx < -THUMB_SIZE || sy < -THUMB_SIZE || sx > width + THUMB_SIZE || sy > height + THUMB_SIZE) continue;
      inView.push([i, sx, sy]);
    }
    this.thumbMode = inView.length <= THUMB_LIMIT || this.view.scale >= THUMB_ZOOM;
    const radius = Math.max(2, Math.min(4.5, (ids.length < 2000 ? 3.5 : 2.2) * Math.sqrt(this.view.scale)));
    const faded = (i) => this.focus !== null && group[i] !== this.focus;
    // Dots first (highlighted ones last, on top), then images over them.
    const highlighted = (i) => this.highlight.has(ids[i]);
    const order = [...inView.filter(([i]) => !highlighted(i)), ...inView.filter(([i]) => highlighted(i))];
    for (const [i, sx, sy] of order) {
      const rank = this.highlight.get(ids[i]);
      context.globalAlpha = faded(i) ? 0.12 : 1;
      context.beginPath();
      context.fillStyle = this.colour(group[i]) + DOT_ALPHA;
      context.arc(sx, sy, rank !== undefined ? radius + 1 : radius, 0, Math.PI * 2);
      context.fill();
      if (rank !== undefined) {
        context.strokeStyle = "#f2f5f8";
        context.lineWidth = rank <= 10 ? 2.5 : 1.5;
        context.beginPath();
        context.arc(sx, sy, radius + (rank <= 10 ? 4 : 3), 0, Math.PI * 2);
        context.stroke();
      }
    }
    context.globalAlpha = 1;
    this.shown = [];
    let drawn = 0;
    if (this.thumbMode) {
      // One image per cell of the screen, highlighted results first, then by id.
      const taken = new Set();
      const candidates = [...order].reverse().filter(([i]) => !faded(i));
      for (const [i, sx, sy] of candidates) {
        const cell = `${Math.floor(sx / CELL)},${Math.floor(sy / CELL)}`;
        if (taken.has(cell)) continue;
        const entry = this.thumbnail(ids[i]);
        if (entry.failed) continue;
        taken.add(cell);
        this.shown.push(i);
        if (!entry.ready) continue;
        const image = entry.image;
        const fit = THUMB_SIZE / Math.max(image.naturalWidth, image.naturalHeight);
        const w = image.naturalWidth * fit;
        const h = image.naturalHeight * fit;
        const rank = this.highlight.get(ids[i]);
        context.fillStyle = rank !== undefined ? "#f2f5f8" : this.colour(group[i]);
        context.fillRect(sx - w / 2 - 2, sy - h / 2 - 2, w + 4, h + 4);
        context.drawImage(image, sx - w / 2, sy - h / 2, w, h);
        drawn++;
      }
    } else {
      this.drawGroupNames(context, toScreen);
    }
    this.canvas.dataset.thumbnails = String(drawn);
    if (this.hovered !== null) {
      const [sx, sy] = toScreen(x[this.hovered], y[this.hovered]);
      context.strokeStyle = "#e6ebf1";
      context.lineWidth = 2;
      context.beginPath();
      if (this.shown.includes(this.hovered)) context.strokeRect(sx - THUMB_SIZE / 2 - 3, sy - THUMB_SIZE / 2 - 3, THUMB_SIZE + 6, THUMB_SIZE + 6);
      else context.arc(sx, sy, radius + 4, 0, Math.PI * 2);
      context.stroke();
    }
  }

  /** Each group's first word where its members lie (zoomed out only). */
  drawGroupNames(context, toScreen) {
    context.font = "600 12px system-ui, sans-serif";
    context.textAlign = "center";
    context.textBaseline = "middle";
    context.lineJoin = "round";
    for (const group of this.groups) {
      if (!group.words.length || (this.focus !== null && group.id !== this.focus)) continue;
      const [sx, sy] = toScreen(group.x, group.y);
      context.lineWidth = 4;
      context.strokeStyle = "rgba(18, 21, 25, 0.9)";
      context.strokeText(group.words[0], sx, sy);
      context.fillStyle = "#eef2f6";
      context.fillText(group.words[0], sx, sy);
    }
  }

  /** The index of the point nearest to a screen position, within HIT_RADIUS px. */
  pointAt(sx, sy) {
    if (!this.points) return null;
    const frame = this.frame();
    // An image drawn there wins: it is what the pointer is over.
    for (let n = this.shown.length - 1; n >= 0; n--) {
      const p = this.shown[n];
      const [px, py] = frame.toScreen(this.points.x[p], this.points.y[p]);
      if (Math.abs(px - sx) <= THUMB_SIZE / 2 && Math.abs(py - sy) <= THUMB_SIZE / 2) return p;
    }
    const [mx, my] = frame.toMap(sx, sy);
    const hit = HIT_RADIUS;
    const reach = hit / Math.max(frame.pixel, 1);
    const { size, map } = this.buckets;
    const span = Math.ceil(reach * size) + 1;
    const bx = Math.floor(mx * size);
    const by = Math.floor(my * size);
    let best = null;
    let bestDistance = hit * hit;
    for (let i = bx - span; i <= bx + span; i++) {
      for (let j = by - span; j <= by + span; j++) {
        if (i < 0 || j < 0 || i >= size || j >= size) continue;
        for (const p of map.get(i * size + j) || []) {
          const [px, py] = frame.toScreen(this.points.x[p], this.points.y[p]);
          const d = (px - sx) ** 2 + (py - sy) ** 2;
          if (d <= bestDistance) {
            bestDistance = d;
            best = p;
          }
        }
      }
    }
    return best;
  }

  local(event) {
    const rect = this.canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  onWheel(event) {
    event.preventDefault();
    const [sx, sy] = this.local(event);
    this.zoom(Math.exp(-event.deltaY * 0.0015), sx, sy);
  }

  /** Zoom by ``factor`` keeping the canvas point (sx, sy) in place (default: centre). */
  zoom(factor, sx = this.canvas.clientWidth / 2, sy = this.canvas.clientHeight / 2) {
    const scale = Math.min(40, Math.max(0.5, this.view.scale * factor));
    const applied = scale / this.view.scale;
    // keep the point under the pointer where it is
    const frame = this.frame();
    const centreX = frame.width / 2 + this.view.dx;
    const centreY = frame.height / 2 + this.view.dy;
    this.view.dx += (sx - centreX) * (1 - applied);
    this.view.dy += (sy - centreY) * (1 - applied);
    this.view.scale = scale;
    this.draw();
  }

  onDown(event) {
    const [sx, sy] = this.local(event);
    this.drag = { sx, sy, dx: this.view.dx, dy: this.view.dy, moved: false };
    this.canvas.setPointerCapture(event.pointerId);
  }

  onMove(event) {
    const [sx, sy] = this.local(event);
    if (this.drag) {
      const mx = sx - this.drag.sx;
      const my = sy - this.drag.sy;
      if (Math.abs(mx) + Math.abs(my) > 3) this.drag.moved = true;
      if (this.drag.moved) {
        this.canvas.classList.add("dragging");
        this.view.dx = this.drag.dx + mx;
        this.view.dy = this.drag.dy + my;
        this.setHovered(null);
        this.draw();
        return;
      }
    }
    this.setHovered(this.pointAt(sx, sy), event);
  }

  onUp(event) {
    const drag = this.drag;
    this.drag = null;
    this.canvas.classList.remove("dragging");
    if (drag && !drag.moved) {
      const [sx, sy] = this.local(event);
      const hit = this.pointAt(sx, sy);
      if (hit !== null) this.handlers.search(this.points.ids[hit]);
    }
  }

  setHovered(index, event) {
    if (index === this.hovered) {
      if (index !== null && event) this.handlers.hover(this.points.ids[index], event);
      return;
    }
    this.hovered = index;
    this.handlers.hover(index === null ? null : this.points.ids[index], event);
    this.draw();
  }

  /** Screen position (client coordinates) of an image id, or null. */
  screenPositionOf(id) {
    if (!this.points) return null;
    const i = this.index.get(id);
    if (i === undefined) return null;
    const [sx, sy] = this.frame().toScreen(this.points.x[i], this.points.y[i]);
    const rect = this.canvas.getBoundingClientRect();
    return { x: rect.left + sx, y: rect.top + sy };
  }
}
