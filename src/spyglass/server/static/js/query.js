// The query image: drop, paste or pick a file, or take an indexed image; drag on it to
// draw the region that the search should focus on.

const MIN_REGION = 0.02;

function clamp01(value) {
  return Math.min(1, Math.max(0, value));
}

export class QueryImage {
  /**
   * @param elements {dropzone, empty, wrap, img, box, fileInput, pick, hint}
   * @param handlers {file(File), region(region|null)}
   */
  constructor(elements, handlers) {
    this.el = elements;
    this.handlers = handlers;
    this.source = null; // {kind: "upload", uploadId} | {kind: "id", id}
    this.file = null;
    this.region = null;
    this.objectUrl = null;
    this.drag = null;

    const { dropzone, fileInput, pick, wrap } = elements;
    pick.addEventListener("click", (event) => {
      event.stopPropagation();
      fileInput.click();
    });
    dropzone.addEventListener("click", (event) => {
      if (!this.source && event.target === dropzone) fileInput.click();
    });
    dropzone.addEventListener("keydown", (event) => {
      if ((event.key === "Enter" || event.key === " ") && !this.source) {
        event.preventDefault();
        fileInput.click();
      }
    });
    fileInput.addEventListener("change", () => {
      const file = fileInput.files && fileInput.files[0];
      fileInput.value = "";
      if (file) this.handlers.file(file);
    });
    wrap.addEventListener("pointerdown", (event) => this.startRegion(event));
    wrap.addEventListener("pointermove", (event) => this.moveRegion(event));
    wrap.addEventListener("pointerup", (event) => this.endRegion(event));
    wrap.addEventListener("pointercancel", () => {
      this.drag = null;
      this.paintRegion();
    });
  }

  /** Show a local file (an upload in progress or done). */
  showFile(file, uploadId) {
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = URL.createObjectURL(file);
    this.show({ kind: "upload", uploadId }, this.objectUrl);
    this.file = file; // kept to upload again if the server has forgotten it
  }

  /** Show an indexed image. */
  showIndexed(id) {
    this.show({ kind: "id", id }, `/api/images/${id}/thumbnail?size=512`);
  }

  show(source, src) {
    this.file = null;
    this.source = source;
    this.region = null;
    this.el.img.src = src;
    this.el.wrap.hidden = false;
    this.el.empty.hidden = true;
    this.el.hint.hidden = false;
    this.paintRegion();
  }

  clear() {
    this.source = null;
    this.file = null;
    this.region = null;
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
    this.el.img.removeAttribute("src");
    this.el.wrap.hidden = true;
    this.el.empty.hidden = false;
    this.el.hint.hidden = true;
    this.paintRegion();
  }

  clearRegion() {
    this.region = null;
    this.paintRegion();
  }

  pointFraction(event) {
    const rect = this.el.img.getBoundingClientRect();
    return {
      x: clamp01((event.clientX - rect.left) / rect.width),
      y: clamp01((event.clientY - rect.top) / rect.height),
    };
  }

  startRegion(event) {
    if (!this.source || event.button !== 0) return;
    event.preventDefault();
    this.el.wrap.setPointerCapture(event.pointerId);
    const start = this.pointFraction(event);
    this.drag = { start, end: start };
    this.paintRegion();
  }

  moveRegion(event) {
    if (!this.drag) return;
    this.drag.end = this.pointFraction(event);
    this.paintRegion();
  }

  endRegion(event) {
    if (!this.drag) return;
    this.drag.end = this.pointFraction(event);
    const box = this.box(this.drag);
    this.drag = null;
    const big = box.right - box.left >= MIN_REGION && box.bottom - box.top >= MIN_REGION;
    if (big) this.region = box;
    this.paintRegion();
    if (big) this.handlers.region(this.region);
  }

  box(drag) {
    const round = (v) => Math.round(v * 1000) / 1000;
    return {
      left: round(Math.min(drag.start.x, drag.end.x)),
      top: round(Math.min(drag.start.y, drag.end.y)),
      right: round(Math.max(drag.start.x, drag.end.x)),
      bottom: round(Math.max(drag.start.y, drag.end.y)),
    };
  }

  paintRegion() {
    const shown = this.drag ? this.box(this.drag) : this.region;
    const { box } = this.el;
    if (!shown) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.style.left = `${shown.left * 100}%`;
    box.style.top = `${shown.top * 100}%`;
    box.style.width = `${(shown.right - shown.left) * 100}%`;
    box.style.height = `${(shown.bottom - shown.top) * 100}%`;
  }
}

/** The first image file in a DataTransfer (drop or paste), or null. */
export function imageFrom(transfer) {
  if (!transfer) return null;
  for (const file of transfer.files || []) {
    if (file.type.startsWith("image/")) return file;
  }
  for (const item of transfer.items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}
