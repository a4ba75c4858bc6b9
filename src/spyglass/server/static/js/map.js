// The collection map: every image as a point placed by t-SNE (similar images lie
// close). Drawn on one canvas, so 20,000 points cost no DOM at all; when few points
// are in view (a small collection, or zoomed in) the images themselves are drawn.
// The current top results are highlighted. Scroll zooms, dragging pans, a click
// searches by the image under the pointer.

const HIT_RADIUS = 7;
// Thumbnails replace dots when at most this many points are in view.
const THUMB_LIMIT = 260;
const THUMB_SIZE = 40;

export class CollectionMapView {
  /** handlers: {search(id), hover(id|null, event)} */
  constructor(canvas, status, handlers) {
    this.canvas = canvas;
    this.status = status;
    this.handlers = handlers;
    this.points = null; // {ids, x, y}
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

  setStatus(text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  setPoints(body) {
    this.points = { ids: body.ids, x: body.x, y: body.y };
    for (const id of body.no_preview || []) this.thumbs.set(id, { ready: false, failed: true });
    const sampled = body.count < body.total ? ` (a sample of ${body.total.toLocaleString()})` : "";
    this.setStatus(`${body.count.toLocaleString()} images${sampled} · laid out in ${body.seconds}s`);
    this.buildBuckets();
    this.draw();
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
    const { ids, x, y } = this.points;
    const inView = [];
    for (let i = 0; i < ids.length; i++) {
      const [sx, sy] = toScreen(x[i], y[i]);
      if (sx < -THUMB_SIZE || sy < -THUMB_SIZE || sx > width + THUMB_SIZE || sy > height + THUMB_SIZE) continue;
      inView.push([i, sx, sy]);
    }
    // Few points in view (a small collection, or zoomed in): show the images themselves.
    this.thumbMode = inView.length <= THUMB_LIMIT;
    const radius = Math.max(2, Math.min(4.5, (ids.length < 2000 ? 3.5 : 2.2) * Math.sqrt(this.view.scale)));
    const highlighted = (i) => this.highlight.has(ids[i]);
    const order = [...inView.filter(([i]) => !highlighted(i)), ...inView.filter(([i]) => highlighted(i))];
    for (const [i, sx, sy] of order) {
      const rank = this.highlight.get(ids[i]);
      const entry = this.thumbMode ? this.thumbnail(ids[i]) : null;
      if (entry && entry.ready) {
        const image = entry.image;
        const scale = THUMB_SIZE / Math.max(image.naturalWidth, image.naturalHeight);
        const w = image.naturalWidth * scale;
        const h = image.naturalHeight * scale;
        context.globalAlpha = this.highlight.size && rank === undefined ? 0.45 : 1;
        context.drawImage(image, sx - w / 2, sy - h / 2, w, h);
        context.globalAlpha = 1;
        if (rank !== undefined) {
          context.strokeStyle = "#86c6bb";
          context.lineWidth = rank <= 10 ? 3 : 2;
          context.strokeRect(sx - w / 2 - 1, sy - h / 2 - 1, w + 2, h + 2);
        }
        continue;
      }
      context.beginPath();
      if (rank !== undefined) {
        context.fillStyle = "#86c6bb";
        context.arc(sx, sy, rank <= 10 ? radius + 2.5 : radius + 1, 0, Math.PI * 2);
      } else {
        context.fillStyle = "rgba(150, 163, 180, 0.6)";
        context.arc(sx, sy, radius, 0, Math.PI * 2);
      }
      context.fill();
    }
    if (this.hovered !== null) {
      const [sx, sy] = toScreen(x[this.hovered], y[this.hovered]);
      context.strokeStyle = "#e6ebf1";
      context.lineWidth = 2;
      context.beginPath();
      if (this.thumbMode) context.strokeRect(sx - THUMB_SIZE / 2 - 3, sy - THUMB_SIZE / 2 - 3, THUMB_SIZE + 6, THUMB_SIZE + 6);
      else context.arc(sx, sy, radius + 4, 0, Math.PI * 2);
      context.stroke();
    }
  }

  /** The index of the point nearest to a screen position, within HIT_RADIUS px. */
  pointAt(sx, sy) {
    if (!this.points) return null;
    const frame = this.frame();
    const [mx, my] = frame.toMap(sx, sy);
    const hit = this.thumbMode ? THUMB_SIZE / 2 : HIT_RADIUS;
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
    const factor = Math.exp(-event.deltaY * 0.0015);
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
    const i = this.points.ids.indexOf(id);
    if (i < 0) return null;
    const [sx, sy] = this.frame().toScreen(this.points.x[i], this.points.y[i]);
    const rect = this.canvas.getBoundingClientRect();
    return { x: rect.left + sx, y: rect.top + sy };
  }
}
