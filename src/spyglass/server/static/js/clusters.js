// The cluster view: the top results as a graph. Each image is a node ringed in its
// cluster's colour; an edge joins an image to its most similar neighbours, drawn
// stronger the more similar they are. Positions come from a small force simulation
// (edges pull, all nodes push apart, each cluster gathers round its own centre),
// seeded so the same results always give the same picture.

const SVG = "http://www.w3.org/2000/svg";
export const CLUSTER_COLOURS = ["#6fb3a8", "#d4b46a", "#9d8fd1", "#d08472", "#7fa7d6", "#a7c47a", "#cf8fb5", "#8fc0c9", "#c9a27f", "#b0b6c0", "#e0c36f", "#86b97f"];
const NODE = 56;

function element(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

/**
 * Pixel positions for the nodes in a width x height box: Fruchterman-Reingold (edges
 * pull by similarity, all nodes push apart), each cluster drawn toward its own centre,
 * then overlaps pushed apart. Deterministic: the same results give the same picture.
 */
export function layoutGraph(nodes, edges, clusterCount, width, height, size = NODE) {
  const n = nodes.length;
  const margin = size / 2 + 6;
  const index = new Map(nodes.map((node, i) => [node.id, i]));
  const centres = [];
  for (let c = 0; c < clusterCount; c++) {
    const angle = (2 * Math.PI * c) / Math.max(1, clusterCount) - Math.PI / 2;
    const spread = clusterCount > 1 ? 0.26 : 0;
    centres.push({ x: width / 2 + spread * width * Math.cos(angle), y: height / 2 + spread * height * Math.sin(angle) });
  }
  const centreOf = (node) => centres[node.cluster] || { x: width / 2, y: height / 2 };
  const points = nodes.map((node, i) => {
    const centre = centreOf(node);
    const angle = i * 2.399963; // golden angle: an even, repeatable spread
    const radius = size * 0.6 * Math.sqrt(i + 1);
    return { x: centre.x + radius * Math.cos(angle), y: centre.y + radius * Math.sin(angle) };
  });
  const links = edges
    .filter((edge) => index.has(edge.source) && index.has(edge.target))
    .map((edge) => ({ a: index.get(edge.source), b: index.get(edge.target), w: 0.4 + Math.max(0, edge.similarity) }));
  const k = 0.3 * Math.sqrt((width * height) / Math.max(1, n));
  const steps = 300;
  for (let step = 0; step < steps; step++) {
    const temperature = (Math.min(width, height) / 8) * (1 - step / steps) + 1;
    const shift = points.map(() => ({ x: 0, y: 0 }));
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        let dx = points[i].x - points[j].x;
        let dy = points[i].y - points[j].y;
        let d = Math.sqrt(dx * dx + dy * dy);
        if (d < 0.01) {
          dx = 0.01 * Math.cos(i + j);
          dy = 0.01 * Math.sin(i + j);
          d = 0.01;
        }
        const push = (k * k) / d;
        shift[i].x += (dx / d) * push;
        shift[i].y += (dy / d) * push;
        shift[j].x -= (dx / d) * push;
        shift[j].y -= (dy / d) * push;
      }
    }
    for (const link of links) {
      const dx = points[link.a].x - points[link.b].x;
      const dy = points[link.a].y - points[link.b].y;
      const d = Math.sqrt(dx * dx + dy * dy) || 0.01;
      const pull = ((d * d) / k) * link.w;
      shift[link.a].x -= (dx / d) * pull;
      shift[link.a].y -= (dy / d) * pull;
      shift[link.b].x += (dx / d) * pull;
      shift[link.b].y += (dy / d) * pull;
    }
    nodes.forEach((node, i) => {
      const centre = centreOf(node);
      shift[i].x += (centre.x - points[i].x) * 2;
      shift[i].y += (centre.y - points[i].y) * 2;
      const length = Math.sqrt(shift[i].x ** 2 + shift[i].y ** 2) || 1;
      const move = Math.min(length, temperature);
      points[i].x = Math.min(width - margin, Math.max(margin, points[i].x + (shift[i].x / length) * move));
      points[i].y = Math.min(height - margin, Math.max(margin, points[i].y + (shift[i].y / length) * move));
    });
  }
  // Centre the drawing in the box.
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const offsetX = width / 2 - (Math.min(...xs) + Math.max(...xs)) / 2;
  const offsetY = height / 2 - (Math.min(...ys) + Math.max(...ys)) / 2;
  for (const p of points) {
    p.x += offsetX;
    p.y += offsetY;
  }
  // Let no two thumbnails overlap.
  const gap = size + 18;
  for (let pass = 0; pass < 40; pass++) {
    let moved = false;
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const dx = points[j].x - points[i].x;
        const dy = points[j].y - points[i].y;
        const overlapX = gap - Math.abs(dx);
        const overlapY = gap - Math.abs(dy);
        if (overlapX <= 0 || overlapY <= 0) continue;
        moved = true;
        if (overlapX < overlapY) {
          const m = (overlapX / 2) * (dx >= 0 ? 1 : -1);
          points[i].x -= m;
          points[j].x += m;
        } else {
          const m = (overlapY / 2) * (dy >= 0 ? 1 : -1);
          points[i].y -= m;
          points[j].y += m;
        }
      }
    }
    for (const p of points) {
      p.x = Math.min(width - margin, Math.max(margin, p.x));
      p.y = Math.min(height - margin, Math.max(margin, p.y));
    }
    if (!moved) break;
  }
  return points;
}

export class ClusterView {
  /** handlers: {search(node), hover(node|null, event)} */
  constructor(svg, legend, empty, handlers) {
    this.svg = svg;
    this.legend = legend;
    this.empty = empty;
    this.handlers = handlers;
    this.data = null;
    this.focus = null;
    new ResizeObserver(() => this.data && this.draw()).observe(svg);
  }

  show(data) {
    this.data = data;
    this.focus = null;
    this.laidOut = null;
    this.draw();
  }

  clear() {
    this.data = null;
    this.svg.replaceChildren();
    this.legend.replaceChildren();
    this.empty.hidden = false;
  }

  draw() {
    const { data } = this;
    this.empty.hidden = data.nodes.length > 0;
    const width = this.svg.clientWidth || 800;
    const height = this.svg.clientHeight || 600;
    const top = 44; // room for the legend
    const key = `${width}x${height}`;
    if (!this.laidOut || this.laidOut.key !== key) {
      const points = layoutGraph(data.nodes, data.edges, data.clusters.length, width, height - top);
      this.laidOut = { key, points };
    }
    this.positions = this.laidOut.points;
    const px = (p) => p.x;
    const py = (p) => top + p.y;
    this.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const similarities = data.edges.map((edge) => edge.similarity);
    const low = Math.min(...similarities, 1);
    const high = Math.max(...similarities, low + 1e-6);
    const index = new Map(data.nodes.map((node, i) => [node.id, i]));

    const edgeLayer = element("g", { class: "edges" });
    for (const edge of data.edges) {
      const a = this.positions[index.get(edge.source)];
      const b = this.positions[index.get(edge.target)];
      if (!a || !b) continue;
      const strength = (edge.similarity - low) / (high - low);
      const line = element("line", {
        x1: px(a), y1: py(a), x2: px(b), y2: py(b),
        "stroke-width": 1 + 3.5 * strength,
        "stroke-opacity": 0.22 + 0.6 * strength,
        "data-source": edge.source, "data-target": edge.target,
      });
      const title = element("title");
      title.textContent = `similarity ${edge.similarity.toFixed(3)}`;
      line.appendChild(title);
      edgeLayer.appendChild(line);
    }

    const nodeLayer = element("g", { class: "nodes" });
    data.nodes.forEach((node, i) => {
      const p = this.positions[i];
      const colour = CLUSTER_COLOURS[node.cluster % CLUSTER_COLOURS.length];
      const group = element("g", {
        class: "node", transform: `translate(${px(p) - NODE / 2}, ${py(p) - NODE / 2})`,
        "data-id": node.id, "data-cluster": node.cluster, tabindex: 0, role: "button",
        "aria-label": `result ${node.rank}, ${this.groupName(node.cluster)}`,
      });
      const clip = `clip-${node.id}`;
      const clipPath = element("clipPath", { id: clip });
      clipPath.appendChild(element("rect", { width: NODE, height: NODE, rx: 8 }));
      group.appendChild(clipPath);
      group.appendChild(element("rect", { width: NODE, height: NODE, rx: 8, fill: "#0e1013" }));
      if (node.thumbnail) {
        const image = element("image", { width: NODE, height: NODE, href: node.thumbnail, "clip-path": `url(#${clip})`, preserveAspectRatio: "xMidYMid slice" });
        group.appendChild(image);
      } else {
        const mark = element("text", { x: NODE / 2, y: NODE / 2 + 4, "text-anchor": "middle", class: "no-preview" });
        mark.textContent = "not shown";
        group.appendChild(mark);
      }
      group.appendChild(element("rect", { class: "ring", width: NODE, height: NODE, rx: 8, stroke: colour }));
      group.addEventListener("click", () => this.handlers.search(node));
      group.addEventListener("keydown", (event) => event.key === "Enter" && this.handlers.search(node));
      group.addEventListener("pointerenter", (event) => this.handlers.hover(node, event));
      group.addEventListener("pointermove", (event) => this.handlers.hover(node, event));
      group.addEventListener("pointerleave", () => this.handlers.hover(null));
      nodeLayer.appendChild(group);
    });
    this.svg.replaceChildren(edgeLayer, nodeLayer);
    this.drawLegend();
    this.applyFocus();
  }

  groupName(id) {
    const cluster = this.data.clusters[id];
    return cluster && cluster.words && cluster.words.length ? cluster.words[0] : `group ${id + 1}`;
  }

  drawLegend() {
    const chips = this.data.clusters.map((cluster) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.dataset.cluster = String(cluster.id);
      const dot = document.createElement("i");
      dot.style.background = CLUSTER_COLOURS[cluster.id % CLUSTER_COLOURS.length];
      // Named by the words nearest the group (POST /api/describe), else numbered.
      const words = cluster.words && cluster.words.length ? cluster.words.slice(0, 2).join(", ") : `Group ${cluster.id + 1}`;
      chip.append(dot, `${words} · ${cluster.size}`);
      const all = cluster.words && cluster.words.length ? `nearest words: ${cluster.words.join(", ")}\n` : "";
      chip.title = `${all}mean similarity to the group's centre ${cluster.cohesion.toFixed(3)}`;
      chip.addEventListener("click", () => {
        this.focus = this.focus === cluster.id ? null : cluster.id;
        this.applyFocus();
      });
      return chip;
    });
    const about = document.createElement("span");
    about.className = "muted";
    about.textContent = this.data.silhouette == null ? "" : `silhouette ${this.data.silhouette.toFixed(2)}`;
    this.legend.replaceChildren(...chips, about);
  }

  applyFocus() {
    const focus = this.focus;
    const clusterOf = new Map(this.data.nodes.map((node) => [node.id, node.cluster]));
    for (const group of this.svg.querySelectorAll(".node")) {
      group.classList.toggle("dim", focus !== null && Number(group.dataset.cluster) !== focus);
    }
    for (const line of this.svg.querySelectorAll("line")) {
      const a = clusterOf.get(Number(line.dataset.source));
      const b = clusterOf.get(Number(line.dataset.target));
      line.classList.toggle("dim", focus !== null && a !== focus && b !== focus);
    }
    for (const chip of this.legend.querySelectorAll("button")) {
      chip.classList.toggle("active", Number(chip.dataset.cluster) === focus);
    }
  }
}
