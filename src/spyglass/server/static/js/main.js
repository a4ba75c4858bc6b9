// The search page: wires the query panel, the results grid, the cluster graph and
// the collection map to the API. Keyboard: Enter searches, Esc clears.
//
// Marks (good/bad) belong to one query: a search for other words, by another image
// or by a clicked result clears them, with a notice that can undo it (which brings
// the previous query back with its marks). Changing the region, the balance, the
// words to add or to leave out, or the method refines the same query: marks stay.

import * as api from "./api.js";
import { CaseFileCheck, DuplicatesView, SavedSearchPanel, describeRun } from "./casework.js";
import { ClusterView } from "./clusters.js";
import { ResultGrid } from "./grid.js";
import { FilterPanel } from "./filters.js";
import { CollectionMapView } from "./map.js";
import { QueryImage, imageFrom } from "./query.js";

const FIRST_PAGE = 100;
const NEXT_PAGE = 200;
const EXPORT_PAGE = 10000; // the server's largest export; more are fetched page by page
const MAP_HIGHLIGHT = 50; // top results marked on the map

const $ = (id) => document.getElementById(id);

const state = {
  marks: new Map(), // image id -> "good" | "bad": one kind per image
  request: null, // the current search, without offset and limit
  identity: null, // what makes the current search one query (see queryIdentity)
  form: null, // the query panel as it was for the current search (for undo)
  undo: null, // {request, identity, form, marks} of the query whose marks were cleared
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

/** A failed search: a query the server refused (400, 422: say an image marked both
 * good and bad) is one line where the results are; anything else is a toast. */
function showSearchError(error) {
  if (error.status === 422 || error.status === 400) {
    showProblem(error.message || "the server refused this search");
    return;
  }
  showError(error);
}

function showProblem(message) {
  const line = $("problem");
  const text = `Not searched: ${message}`;
  line.textContent = text;
  line.title = text;
  line.hidden = false;
}

function clearProblem() {
  $("problem").hidden = true;
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
  if ($("collapse-duplicates").checked) body.collapse_duplicates = true;
  const filters = filterPanel.current();
  if (filters) body.filters = filters;
  const source = queryImage.source;
  if (source && source.kind === "upload" && source.uploadId) body.upload_id = source.uploadId;
  if (source && source.kind === "id") body.image_id = source.id;
  if (queryImage.region) body.region = queryImage.region;
  // The order by date is a browse's (filters, no query); a query is ordered by similarity.
  const browsing = isBrowse(body);
  $("filter-sort-field").hidden = !browsing;
  if (browsing && $("filter-sort").value === "oldest") body.sort = "oldest";
  return body;
}

/** What makes a search one query: the words of the search box and the query image.
 * Marks made for one query do not carry over to another. */
function queryIdentity() {
  const source = queryImage.source;
  let image = null;
  if (source && source.kind === "id") image = `id:${source.id}`;
  if (source && source.kind === "upload") {
    const file = queryImage.file;
    image = file ? `file:${file.name}:${file.size}:${file.lastModified}` : `upload:${source.uploadId}`;
  }
  return JSON.stringify({ text: $("query-text").value.trim(), image });
}

/** The query panel, to bring a query back (undo). */
function captureForm() {
  return {
    text: $("query-text").value,
    modifier: $("modifier").value,
    exclude: $("exclude").value,
    balance: $("balance").value,
    method: $("method").value,
    rerank: $("rerank-method").value,
    collapse: $("collapse-duplicates").checked,
    source: queryImage.source ? { ...queryImage.source } : null,
    file: queryImage.file,
    region: queryImage.region,
  };
}

function restoreForm(form) {
  $("query-text").value = form.text;
  $("modifier").value = form.modifier;
  $("exclude").value = form.exclude;
  $("balance").value = form.balance;
  $("method").value = form.method;
  $("rerank-method").value = form.rerank;
  $("collapse-duplicates").checked = Boolean(form.collapse);
  if (!form.source) queryImage.clear();
  else if (form.source.kind === "id") queryImage.showIndexed(form.source.id);
  else if (form.file) queryImage.showFile(form.file, form.source.uploadId);
  queryImage.region = form.region;
  queryImage.paintRegion();
  updateBalance();
  updateImageControls();
}

/** A new query begins: its marks go, and the notice offers them back. */
function clearMarksForNewQuery() {
  hideMarksNotice();
  if (!state.marks.size || !state.request) return;
  const count = state.marks.size;
  state.undo = { request: state.request, identity: state.identity, form: state.form, marks: new Map(state.marks) };
  state.marks.clear();
  updateMarks();
  $("marks-notice-text").textContent = `${count} ${count === 1 ? "mark" : "marks"} cleared for the new query —`;
  $("marks-notice").hidden = false;
}

function hideMarksNotice() {
  $("marks-notice").hidden = true;
  state.undo = null;
}

/** Undo: the previous query comes back, with its marks and its results. */
function undoClearedMarks() {
  const undo = state.undo;
  if (!undo) return;
  hideMarksNotice();
  restoreForm(undo.form);
  state.marks = new Map(undo.marks);
  updateMarks();
  search({ body: undo.request });
}

function isBrowse(body) {
  return !body.text && body.upload_id === undefined && body.image_id === undefined && !body.positives.length && !body.negatives.length;
}

function describeEmpty(body) {
  return (
    !body.text && body.upload_id === undefined && body.image_id === undefined && body.positives.length === 0 && !body.filters
  );
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
    await search({ fresh: true });
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
  search({ fresh: true }); // the clicked result starts a query of its own, unmarked
}

// -- filters -------------------------------------------------------------------------

const filterPanel = new FilterPanel(
  $("facets"),
  { after: $("filter-after"), before: $("filter-before"), minSize: $("filter-min-size"), clear: $("filters-clear") },
  // Filters narrow the same query (marks stay); with no query they browse. The
  // facets' counts follow them.
  () => {
    loadFacets();
    if (filterPanel.current() || (state.request && !describeEmpty({ ...state.request, filters: undefined }))) {
      search({ keepMarks: true });
    } else if (state.request) {
      // The last filter of a browse was taken off: nothing is asked any more.
      state.generation++;
      state.request = null;
      grid.clear();
      $("results-empty").hidden = false;
      document.body.dataset.results = "0";
      summary("");
    }
  },
);

let facetsAsked = 0;

/** The facets' counts for the filters set now (a later call's answer wins). */
async function loadFacets() {
  const asked = ++facetsAsked;
  const query = filterPanel.facetQuery();
  try {
    const facets = await api.getJSON(`/api/facets${query}`);
    if (asked === facetsAsked) filterPanel.show(facets);
  } catch (error) {
    // A bad typed date is told by the search it starts; the counts stay as they were.
    if (!query) showError(error);
  }
}

$("filter-sort").addEventListener("change", () => {
  if (state.request && isBrowse(state.request)) search({ keepMarks: true });
});

// -- searching -----------------------------------------------------------------------

const grid = new ResultGrid($("grid-scroll"), $("grid-sizer"), {
  search: (item) => searchByImage(item.id),
  open: (item) => openLightbox(item.id),
  mark: (item, kind) => toggleMark(item.id, kind),
  markOf: (id) => state.marks.get(id),
  needMore: () => loadMore(),
  explain: (item) => toggleExplanation(item.id),
  explanationOf: (id) => explanationOf(id, TILE_EXPLANATION),
});

// -- why it matched ----------------------------------------------------------------------

const TILE_EXPLANATION = 512; // longer side of a tile's heatmap, in pixels
const LIGHTBOX_EXPLANATION = 1024;
const explanations = {
  query: null, // the search (state.request) they explain, as JSON
  shown: new Map(), // `${id}:${side}` -> object URL of the image with its heatmap
  waiting: new Set(),
};

/** The explanation of ``id`` for the current search, if loaded and switched on. */
function explanationOf(id, side) {
  if (explanations.query !== JSON.stringify(state.request)) return null;
  return explanations.shown.get(`${id}:${side}`) || null;
}

/** Fetch the heatmap of ``id`` for the current search (the model runs ~40 times). */
async function loadExplanation(id, side) {
  const query = JSON.stringify(state.request);
  if (explanations.query !== query) {
    for (const url of explanations.shown.values()) URL.revokeObjectURL(url);
    explanations.shown.clear();
    explanations.query = query;
  }
  const url = await api.explainImage({ ...state.request, id, max_side: side });
  if (explanations.query !== query) {
    URL.revokeObjectURL(url); // another search started meanwhile
    return null;
  }
  explanations.shown.set(`${id}:${side}`, url);
  document.body.dataset.explanations = String(explanations.shown.size);
  return url;
}

/** A tile's "why it matched" toggle: load and show the heatmap, or hide it. */
async function toggleExplanation(id) {
  const key = `${id}:${TILE_EXPLANATION}`;
  if (!state.request || explanations.waiting.has(key)) return;
  if (explanationOf(id, TILE_EXPLANATION)) {
    URL.revokeObjectURL(explanations.shown.get(key));
    explanations.shown.delete(key);
    grid.refreshExplanations();
    return;
  }
  explanations.waiting.add(key);
  grid.setExplaining(id, true);
  try {
    await loadExplanation(id, TILE_EXPLANATION);
  } catch (error) {
    showError(error);
  } finally {
    explanations.waiting.delete(key);
    grid.setExplaining(id, false);
    grid.refreshExplanations();
  }
}

/** The lightbox's toggle: the large image with its heatmap, or without. */
async function toggleLightboxExplanation() {
  const box = $("lightbox");
  const id = Number(box.dataset.id);
  const button = $("lightbox-explain");
  if (button.getAttribute("aria-pressed") === "true") {
    button.setAttribute("aria-pressed", "false");
    $("lightbox-image").src = api.thumbnailUrl(id, 1024);
    return;
  }
  button.disabled = true;
  button.textContent = "Explaining…";
  try {
    const url = explanationOf(id, LIGHTBOX_EXPLANATION) || (await loadExplanation(id, LIGHTBOX_EXPLANATION));
    if (url && Number(box.dataset.id) === id && box.open) {
      $("lightbox-image").src = url;
      button.setAttribute("aria-pressed", "true");
    }
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
    button.textContent = "Why it matched";
  }
}

/**
 * Run the query in the panel. options: fresh (a new query: clear the marks),
 * keepMarks (re-rank: the marks stay whatever changed), body (run this request as
 * it is: undo), retried (the upload was sent again).
 */
async function search(options = {}) {
  if (queryImage.source && queryImage.source.kind === "upload" && !queryImage.source.uploadId) {
    return; // still uploading: the upload searches when it is done
  }
  const identity = queryIdentity();
  if (!options.body && !options.retried) {
    const newQuery = options.fresh || (state.identity !== null && identity !== state.identity);
    if (newQuery && !options.keepMarks) clearMarksForNewQuery();
    else hideMarksNotice();
  }
  const body = options.body || buildRequest();
  if (describeEmpty(body)) {
    toast("Type a description, add an image, mark results as good, or choose a filter");
    return;
  }
  const generation = ++state.generation;
  state.request = body;
  state.identity = identity;
  state.form = captureForm();
  state.clustersFor = null;
  summary("Searching…");
  closePanel();
  $("search-button").disabled = true;
  try {
    const page = await api.postJSON("/api/search", { ...body, offset: 0, limit: FIRST_PAGE });
    if (generation !== state.generation) return;
    clearProblem();
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
        const body = options.body && { ...options.body, upload_id: upload.upload_id };
        return search({ ...options, body, retried: true });
      } catch (again) {
        error = again;
      }
    }
    if (generation === state.generation) {
      summary("");
      showSearchError(error);
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
      showSearchError(error);
    }
  }
}

function afterResults() {
  if (state.tab === "clusters") loadClusters();
  if (state.tab === "map") mapView.setHighlight(grid.items.slice(0, MAP_HIGHLIGHT));
}

/** Mark an image good or bad, or take the mark back. One kind per image: marking it
 * good takes back "bad" and the other way round (the server refuses both at once). */
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
  state.identity = null;
  state.marks.clear();
  hideMarksNotice();
  clearProblem();
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
    try {
      const named = await api.postJSON("/api/describe", { groups: data.clusters.map((c) => c.members) });
      data.clusters.forEach((cluster, n) => (cluster.words = named.groups[n].words));
    } catch (error) {
      if (error.status === 401) throw error;
      // Names are a nicety: without them the legend numbers the groups.
    }
    if (state.request !== request) return;
    clusterView.show(data);
    document.body.dataset.clusters = String(data.clusters.length);
    summary(`${data.query} · top ${data.nodes.length} in ${data.clusters.length} groups`);
  } catch (error) {
    state.clustersFor = null;
    showError(error);
  }
}

const mapStatus = { box: $("map-status"), text: $("map-status-text"), bar: $("map-progress") };
const mapView = new CollectionMapView($("map-canvas"), mapStatus, $("map-legend"), {
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
      const done = typeof body.progress === "number" ? body.progress : 0;
      mapView.setStatus(`Laying out the collection… ${body.message} · ${Math.round(done * 100)}%`, done);
      document.body.dataset.mapProgress = String(done);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } catch (error) {
    showError(error);
  } finally {
    mapPolling = false;
  }
}

function selectTab(name) {
  state.tab = name;
  for (const tab of ["results", "clusters", "map", "duplicates"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`view-${tab}`).hidden = tab !== name;
  }
  tooltip.hidden = true;
  if (name === "clusters") loadClusters();
  if (name === "duplicates") duplicatesView.load();
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
  $("lightbox-explain").setAttribute("aria-pressed", "false");
  $("lightbox-explain").hidden = !state.request; // nothing to explain without a search
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
      ["Audit log", status.audit
        ? "on: this server records every search, export and saved-search run"
        : "off"],
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

/** Every result of the query, not only the rows loaded in the grid; marked images
 * carry their mark (the ranking is the one shown: the marks it was searched with). */
async function exportAs(format) {
  if (!state.request) return;
  const total = Math.max(state.searchable, grid.size, 1);
  summary(`Exporting ${total.toLocaleString()} results…`);
  try {
    const name = await api.exportResults({ ...state.request, format }, total, EXPORT_PAGE);
    summary(`Saved ${name} · ${total.toLocaleString()} results`);
  } catch (error) {
    showError(error);
  }
}

// -- case work: saved searches, checking a case file, near-duplicates ---------------------

const savedPanel = new SavedSearchPanel(
  { name: $("saved-name"), save: $("saved-save"), confirm: $("saved-confirm"), list: $("saved-list") },
  { request: () => state.request, show: showSavedRun, error: showError },
);

/** A saved search's run, in the grid as a search's results are. It is not the query
 * in the panel, so it has no request: nothing loads more, exports or explains it. */
function showSavedRun(run) {
  clearMarksForNewQuery(); // another query: the marks go, with the undo notice
  state.generation++;
  state.request = null;
  state.identity = null;
  state.clustersFor = null;
  clearProblem();
  selectTab("results");
  grid.setItems(run.results, false);
  $("results-empty").hidden = run.results.length > 0;
  $("results-empty").querySelector("h3").textContent = run.new_only ? "Nothing new since its last run" : "No results";
  $("export-csv").disabled = $("export-json").disabled = true;
  summary(describeRun(run));
  document.body.dataset.results = String(run.results.length);
  document.body.dataset.savedRuns = String(Number(document.body.dataset.savedRuns || 0) + 1);
}

new CaseFileCheck(
  {
    drop: $("verify-drop"),
    pick: $("verify-pick"),
    input: $("verify-file"),
    dialog: $("verify-dialog"),
    verdict: $("verify-verdict"),
    facts: $("verify-facts"),
    close: $("verify-close"),
  },
  { error: showError },
);

const duplicatesView = new DuplicatesView(
  { summary: $("dup-summary"), groups: $("dup-groups"), more: $("dup-more"), empty: $("dup-empty"), threshold: $("dup-threshold") },
  { open: (id) => openLightbox(id), error: showError },
);

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
  await loadFacets();
  await savedPanel.load();
  document.body.dataset.ready = "1";
}

// -- wiring ------------------------------------------------------------------------------

api.setUnauthorisedHandler(askForToken);

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
// On a narrow screen the panel is a drawer over the results: a search closes it.
function closePanel() {
  document.body.classList.remove("panel-open");
  $("panel-toggle").setAttribute("aria-expanded", "false");
}
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
$("collapse-duplicates").addEventListener("change", () => state.request && search({ keepMarks: true }));
$("clear-image").addEventListener("click", () => {
  queryImage.clear();
  updateImageControls();
});
$("clear-region").addEventListener("click", () => {
  queryImage.clearRegion();
  updateImageControls();
  if (state.request) search();
});
$("rerank").addEventListener("click", () => search({ keepMarks: true }));
$("marks-undo").addEventListener("click", undoClearedMarks);
$("marks-dismiss").addEventListener("click", hideMarksNotice);
$("panel-toggle").addEventListener("click", () => {
  const open = !document.body.classList.contains("panel-open");
  document.body.classList.toggle("panel-open", open);
  $("panel-toggle").setAttribute("aria-expanded", String(open));
});
$("clear-marks").addEventListener("click", () => {
  state.marks.clear();
  updateMarks();
});
$("map-zoom-in").addEventListener("click", () => mapView.zoom(1.6));
$("map-zoom-out").addEventListener("click", () => mapView.zoom(1 / 1.6));
$("export-csv").addEventListener("click", () => exportAs("csv"));
$("export-json").addEventListener("click", () => exportAs("json"));
for (const tab of ["results", "clusters", "map", "duplicates"]) {
  $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
}
$("lightbox-close").addEventListener("click", () => $("lightbox").close());
$("lightbox-explain").addEventListener("click", toggleLightboxExplanation);
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
  if (event.target instanceof Element && event.target.closest("#verify-drop")) return; // a case file
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
