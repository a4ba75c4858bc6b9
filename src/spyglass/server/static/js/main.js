// The search page: wires the query panel, the results grid, the cluster graph and
// the collection map to the API. Keyboard: Enter searches, Esc clears.

import * as api from "./api.js";
import { ClusterView } from "./clusters.js";
import { ResultGrid } from "./grid.js";
import { CollectionMapView } from "./map.js";
import { QueryImage, imageFrom } from "./query.js";

const FIRST_PAGE = 100;
const NEXT_PAGE = 200;
const EXPORT_MAX = 10000;
const MAP_HIGHLIGHT = 50; // top results marked on the map

const $ = (id) => document.getElementById(id);

const state = {
  marks: new Map(), // image id -> "good" | "bad"
  request: null, // the current search, without offset and limit
  generation: 0,
  searches: 0, // completed searches (the page's tests wait on this)
  searchable: 0,
  tab: "results",
  clustersFor: null,
  methods: null,
};

// -- small helpers -------------------------------------------------------------------

let toastTimer = 0;
function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 6000);
}

function showError(error) {
  if (error.name === "AbortError") return;
  if (error.status === 401) return; // the token dialog is open
  toast(error.message || String(error));
}

/** The status line; folders are cut from paths (the full text is its tooltip). */
function summary(text) {
  $("summary").textContent = text.replace(/\((\/[^()]*\/)([^/()]+)\)/g, "($2)");
  $("summary").title = text;
}

const tooltip = $("tooltip");
function showTooltip(id, event, lines, noPreview = false) {
  if (id === null || !event) {
    tooltip.hidden = true;
    return;
  }
  if (tooltip.dataset.id !== String(id)) {
    tooltip.dataset.id = String(id);
    const img = document.createElement("img");
    img.alt = "";
    img.addEventListener("error", () => img.remove());
    if (noPreview) img.hidden = true; // a file the server will not show
    else img.src = api.thumbnailUrl(id);
    const text = document.createElement("div");
    text.className = "path";
    text.textContent = lines || `image #${id}`;
    tooltip.replaceChildren(img, text);
    if (!lines) {
      api.getJSON(`/api/images/${id}`).then((detail) => {
        if (tooltip.dataset.id !== String(id)) return;
        text.textContent = noPreview ? `${detail.path} (not shown: outside the indexed folders)` : detail.path;
      }, () => {});
    }
  }
  tooltip.hidden = false;
  const x = Math.min(event.clientX + 16, window.innerWidth - 250);
  const y = Math.min(event.clientY + 16, window.innerHeight - 220);
  tooltip.style.left = `${x}px`;
  tooltip.style.top = `${y}px`;
}

// -- the query -----------------------------------------------------------------------

const queryImage = new QueryImage(
  {
    dropzone: $("dropzone"),
    empty: $("dropzone-empty"),
    wrap: $("query-image-wrap"),
    img: $("query-image"),
    box: $("region-box"),
    fileInput: $("file-input"),
    pick: $("pick-file"),
    hint: $("region-hint"),
  },
  {
    file: (file) => useFile(file),
    region: () => {
      updateImageControls();
      search();
    },
  },
);

function updateImageControls() {
  const hasImage = queryImage.source !== null;
  $("clear-image").hidden = !hasImage;
  $("clear-region").hidden = queryImage.region === null;
  $("balance-field").classList.toggle("disabled", !hasImage);
  $("balance").disabled = !hasImage;
}

function updateBalance() {
  const share = Number($("balance").value);
  $("image-share").textContent = `${share}%`;
  $("text-share").textContent = `${100 - share}%`;
}

function queryText() {
  return [$("query-text").value.trim(), $("modifier").value.trim()].filter(Boolean).join(", ");
}

function buildRequest() {
  const body = {
    text: queryText() || undefined,
    image_weight: Number($("balance").value) / 100,
    exclude: $("exclude").value.split(",").map((s) => s.trim()).filter(Boolean).slice(0, 20),
    positives: [...state.marks].filter(([, kind]) => kind === "good").map(([id]) => id),
    negatives: [...state.marks].filter(([, kind]) => kind === "bad").map(([id]) => id),
    method: $("method").value || "default",
    rerank: $("rerank-method").value || "default",
  };
  const source = queryImage.source;
  if (source && source.kind === "upload" && source.uploadId) body.upload_id = source.uploadId;
  if (source && source.kind === "id") body.image_id = source.id;
  if (queryImage.region) body.region = queryImage.region;
  return body;
}

function describeEmpty(body) {
  return !body.text && body.upload_id === undefined && body.image_id === undefined && body.positives.length === 0;
}

async function useFile(file) {
  if (!file.type.startsWith("image/")) {
    toast(`${file.name || "that file"} is not an image`);
    return;
  }
  queryImage.showFile(file, null);
  updateImageControls();
  summary("Uploading the image…");
  try {
    const upload = await api.uploadImage(file);
    queryImage.source = { kind: "upload", uploadId: upload.upload_id };
    await search();
  } catch (error) {
    queryImage.clear();
    updateImageControls();
    summary("");
    showError(error);
  }
}

/** "More like this": the image replaces the words of the search box (the modifier
 * box keeps its words, they say how to change the image). */
function searchByImage(id) {
  $("query-text").value = "";
  queryImage.showIndexed(id);
  updateImageControls();
  $("results-empty").hidden = true;
  search();
}

// -- searching -----------------------------------------------------------------------

const grid = new ResultGrid($("grid-scroll"), $("grid-sizer"), {
  search: (item) => searchByImage(item.id),
  open: (item) => openLightbox(item.id),
  mark: (item, kind) => toggleMark(item.id, kind),
  markOf: (id) => state.marks.get(id),
  needMore: () => loadMore(),
});

async function search(retried = false) {
  if (queryImage.source && queryImage.source.kind === "upload" && !queryImage.source.uploadId) {
    return; // still uploading: the upload searches when it is done
  }
  const body = buildRequest();
  if (describeEmpty(body)) {
    toast("Type a description, add an image, or mark results as good");
    return;
  }
  const generation = ++state.generation;
  state.request = body;
  state.clustersFor = null;
  summary("Searching…");
  $("search-button").disabled = true;
  try {
    const page = await api.postJSON("/api/search", { ...body, offset: 0, limit: FIRST_PAGE });
    if (generation !== state.generation) return;
    state.searchable = page.searchable;
    grid.setItems(page.results, page.has_more);
    $("results-empty").hidden = page.results.length > 0;
    if (!page.results.length) {
      $("results-empty").querySelector("h3").textContent = "No results";
    }
    summary(`${page.query} · ${page.took_ms.toFixed(0)} ms`);
    document.body.dataset.results = String(page.results.length);
    document.body.dataset.searches = String(++state.searches);
    $("export-csv").disabled = $("export-json").disabled = page.results.length === 0;
    afterResults();
  } catch (error) {
    if (error.code === "unknown-upload" && !retried && queryImage.file) {
      // The server forgets old uploads: send the image again, once.
      try {
        const upload = await api.uploadImage(queryImage.file);
        queryImage.source = { kind: "upload", uploadId: upload.upload_id };
        return search(true);
      } catch (again) {
        error = again;
      }
    }
    if (generation === state.generation) {
      summary("");
      showError(error);
    }
  } finally {
    if (generation === state.generation) $("search-button").disabled = false;
  }
}

async function loadMore() {
  if (!state.request) return;
  const generation = state.generation;
  grid.setLoading(true);
  try {
    const page = await api.postJSON("/api/search", { ...state.request, offset: grid.size, limit: NEXT_PAGE });
    if (generation !== state.generation) return;
    grid.append(page.results, page.has_more);
    document.body.dataset.results = String(grid.size);
    if (state.tab === "map") mapView.setHighlight(grid.items.slice(0, MAP_HIGHLIGHT));
  } catch (error) {
    if (generation === state.generation) {
      grid.append([], false);
      showError(error);
    }
  }
}

function afterResults() {
  if (state.tab === "clusters") loadClusters();
  if (state.tab === "map") mapView.setHighlight(grid.items.slice(0, MAP_HIGHLIGHT));
}

function toggleMark(id, kind) {
  if (state.marks.get(id) === kind) state.marks.delete(id);
  else state.marks.set(id, kind);
  updateMarks();
}

function updateMarks() {
  const good = [...state.marks.values()].filter((k) => k === "good").length;
  const bad = state.marks.size - good;
  $("good-count").textContent = `${good} good`;
  $("bad-count").textContent = `${bad} bad`;
  $("good-count").classList.toggle("on", good > 0);
  $("bad-count").classList.toggle("on", bad > 0);
  $("rerank").disabled = state.marks.size === 0;
  $("clear-marks").disabled = state.marks.size === 0;
  grid.refreshMarks();
}

function clearAll() {
  state.generation++;
  state.request = null;
  state.marks.clear();
  $("query-text").value = "";
  $("modifier").value = "";
  $("exclude").value = "";
  queryImage.clear();
  updateImageControls();
  updateMarks();
  grid.clear();
  clusterView.clear();
  mapView.setHighlight([]);
  $("results-empty").hidden = false;
  $("results-empty").querySelector("h3").textContent = "Search the collection";
  $("export-csv").disabled = $("export-json").disabled = true;
  document.body.dataset.results = "0";
  summary("");
  $("query-text").focus();
}

// -- clusters and map ------------------------------------------------------------------

const clusterView = new ClusterView($("cluster-graph"), $("cluster-legend"), $("clusters-empty"), {
  search: (node) => {
    selectTab("results");
    searchByImage(node.id);
  },
  hover: (node, event) => showTooltip(node ? node.id : null, event, node ? `#${node.rank} · ${node.score.toFixed(3)} · ${node.path}` : ""),
});

async function loadClusters() {
  if (!state.request) {
    clusterView.clear();
    return;
  }
  if (state.clustersFor === state.request) return;
  const request = state.request;
  state.clustersFor = request;
  $("clusters-empty").hidden = true;
  summary("Grouping the top 50…");
  try {
    const data = await api.postJSON("/api/clusters", { ...request, offset: 0, limit: 50 });
    if (state.request !== request) return;
    clusterView.show(data);
    document.body.dataset.clusters = String(data.clusters.length);
    summary(`${data.query} · top ${data.nodes.length} in ${data.clusters.length} groups`);
  } catch (error) {
    state.clustersFor = null;
    showError(error);
  }
}

const mapView = new CollectionMapView($("map-canvas"), $("map-status"), {
  search: (id) => {
    selectTab("results");
    searchByImage(id);
  },
  hover: (id, event) => showTooltip(id, event, null, !mapView.hasPreview(id)),
});

let mapPolling = false;
async function loadMap() {
  if (mapView.ready || mapPolling) return;
  mapPolling = true;
  try {
    for (;;) {
      const { body } = await api.getWithStatus("/api/map");
      if (body.status === "ready") {
        mapView.setPoints(body);
        mapView.setHighlight(grid.items.slice(0, MAP_HIGHLIGHT));
        document.body.dataset.map = String(body.count);
        return;
      }
      if (body.status === "failed") {
        mapView.setStatus(body.message);
        return;
      }
      mapView.setStatus(`Laying out the collection… ${body.message}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } catch (error) {
    showError(error);
  } finally {
    mapPolling = false;
  }
}

function selectTab(name) {
  state.tab = name;
  for (const tab of ["results", "clusters", "map"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`view-${tab}`).hidden = tab !== name;
  }
  tooltip.hidden = true;
  if (name === "clusters") loadClusters();
  if (name === "map") {
    loadMap();
    mapView.draw();
  }
}

// -- lightbox ----------------------------------------------------------------------------

async function openLightbox(id) {
  const box = $("lightbox");
  $("lightbox-image").src = api.thumbnailUrl(id, 1024);
  $("lightbox-path").textContent = "";
  $("lightbox-meta").textContent = "";
  $("lightbox-original").href = `/api/images/${id}/original`;
  box.dataset.id = String(id);
  box.showModal();
  try {
    const detail = await api.getJSON(`/api/images/${id}`);
    $("lightbox-path").textContent = detail.path;
    const copies = detail.paths.length > 1 ? ` · ${detail.paths.length} copies` : "";
    $("lightbox-meta").textContent = `${detail.width}×${detail.height} ${detail.format}${copies} · image #${detail.id}`;
  } catch (error) {
    showError(error);
  }
}

// -- the index ---------------------------------------------------------------------------

async function openStatus() {
  try {
    const status = await api.getJSON("/api/status?skipped=200");
    const facts = [
      ["Index", status.index],
      ["Model", `${status.model} (version ${status.model_version})`],
      ["Spaces", Object.entries(status.spaces).map(([name, dims]) => `${name} ${dims}-d`).join(", ")],
      ["Images", `${status.images.toLocaleString()} files, ${status.unique_images.toLocaleString()} distinct`],
      ["Folders", status.roots.join("\n")],
      ["Skipped", status.skipped.toLocaleString()],
    ];
    $("status-facts").replaceChildren(
      ...facts.flatMap(([name, value]) => {
        const term = document.createElement("dt");
        term.textContent = name;
        const detail = document.createElement("dd");
        detail.textContent = value;
        return [term, detail];
      }),
    );
    $("skipped-title").hidden = status.skipped === 0;
    $("skipped-list").replaceChildren(
      ...status.skipped_files.map((file) => {
        const item = document.createElement("li");
        const reason = document.createElement("span");
        reason.className = "reason";
        reason.textContent = file.reason;
        item.append(reason, `${file.path}: ${file.message}`);
        return item;
      }),
    );
    $("status-dialog").showModal();
  } catch (error) {
    showError(error);
  }
}

// -- export ------------------------------------------------------------------------------

async function exportAs(format) {
  if (!state.request) return;
  const limit = Math.min(EXPORT_MAX, Math.max(grid.size, FIRST_PAGE));
  try {
    const name = await api.exportResults({ ...state.request, offset: 0, limit, format });
    summary(`Saved ${name}`);
  } catch (error) {
    showError(error);
  }
}

// -- access ------------------------------------------------------------------------------

function askForToken() {
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

async function useToken(token) {
  try {
    await api.openSession(token);
    $("token-dialog").close();
    $("token-error").hidden = true;
    await start();
  } catch (error) {
    $("token-error").textContent = error.status === 401 ? "That token is not right." : error.message;
    $("token-error").hidden = false;
    askForToken();
  }
}

async function start() {
  const status = await api.getJSON("/api/status?skipped=0");
  state.searchable = status.unique_images;
  const skipped = status.skipped ? ` · ${status.skipped.toLocaleString()} skipped` : "";
  $("index-info").textContent = `${status.images.toLocaleString()} images · ${status.model} model${skipped}`;
  $("index-info").title = `${status.index}\n${status.roots.join("\n")}`;
  if (!state.methods) {
    state.methods = await api.getJSON("/api/methods");
    const fill = (select, entries, chosen) => {
      select.replaceChildren(
        ...entries.map(([name, about]) => {
          const option = document.createElement("option");
          option.value = name;
          option.textContent = name;
          option.title = about;
          option.selected = name === chosen;
          return option;
        }),
      );
    };
    const perKind = (table) => Object.entries(table).map(([kind, name]) => `${kind}: ${name}`).join(", ");
    fill($("method"), [["default", "default (best per query kind)"], ...Object.entries(state.methods.methods)], "default");
    $("method").options[0].title = perKind(state.methods.default_methods);
    fill($("rerank-method"), [["default", "default (best per query kind)"], ...Object.entries(state.methods.rerankers)], "default");
    $("rerank-method").options[0].title = perKind(state.methods.default_rerankers);
  }
  document.body.dataset.ready = "1";
}

// -- wiring ------------------------------------------------------------------------------

api.setUnauthorisedHandler(askForToken);

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
for (const id of ["modifier", "exclude"]) {
  $(id).addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      search();
    }
  });
}
$("balance").addEventListener("input", updateBalance);
$("balance").addEventListener("change", () => state.request && search());
$("clear-image").addEventListener("click", () => {
  queryImage.clear();
  updateImageControls();
});
$("clear-region").addEventListener("click", () => {
  queryImage.clearRegion();
  updateImageControls();
  if (state.request) search();
});
$("rerank").addEventListener("click", () => search());
$("clear-marks").addEventListener("click", () => {
  state.marks.clear();
  updateMarks();
});
$("export-csv").addEventListener("click", () => exportAs("csv"));
$("export-json").addEventListener("click", () => exportAs("json"));
for (const tab of ["results", "clusters", "map"]) {
  $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
}
$("lightbox-close").addEventListener("click", () => $("lightbox").close());
$("index-info").addEventListener("click", openStatus);
$("status-close").addEventListener("click", () => $("status-dialog").close());
$("lightbox-search").addEventListener("click", () => {
  const id = Number($("lightbox").dataset.id);
  $("lightbox").close();
  selectTab("results");
  searchByImage(id);
});
$("token-dialog").addEventListener("cancel", (event) => event.preventDefault()); // nothing works without it
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  useToken($("token-input").value);
});

// Drop anywhere on the page; paste anywhere.
let dragDepth = 0;
window.addEventListener("dragenter", (event) => {
  if (![...(event.dataTransfer?.types || [])].includes("Files")) return;
  dragDepth++;
  $("drop-overlay").hidden = false;
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) $("drop-overlay").hidden = true;
});
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  $("drop-overlay").hidden = true;
  const file = imageFrom(event.dataTransfer);
  if (file) useFile(file);
  else toast("Drop an image file");
});
window.addEventListener("paste", (event) => {
  const file = imageFrom(event.clipboardData);
  if (file) {
    event.preventDefault();
    useFile(file);
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (document.querySelector("dialog[open]")) return; // the dialog closes itself
  if (!tooltip.hidden) tooltip.hidden = true;
  event.preventDefault();
  clearAll();
});

// A link of the form http://host/#token=... opens the session and leaves the address.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  history.replaceState(null, "", location.pathname + location.search);
  useToken(fromHash);
} else {
  start().catch(showError);
}
updateBalance();
updateImageControls();
updateMarks();
$("query-text").focus();
