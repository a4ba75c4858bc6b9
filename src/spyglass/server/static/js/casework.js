// Case work on the page: saved searches (save the search on screen, list, run, run
// for only the images indexed since the last run, delete), checking a JSON case file
// again (POST /api/verify), and the near-duplicate groups of the collection (GET
// /api/duplicates). Each is what its `spyglass saved`, `spyglass verify` and
// `spyglass duplicates` command does; main.js shows a saved search's results in the
// grid and opens a duplicate in the lightbox.

import * as api from "./api.js";

const SAVED_PAGE = 100; // results a saved search keeps (the grid's first page)
const GROUPS_SHOWN = 20; // duplicate groups added per "Show more"
const GROUPS_FETCHED = 200; // groups asked for at once; more when those are shown

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, label, onClick, className = "") {
  const node = element("button", className, text);
  node.type = "button";
  if (label) node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}

/** An ISO 8601 UTC time as the reader's local date and minute. */
function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A file's name without its folders (a group's members mostly share them). */
function fileName(path) {
  return path.split("/").filter(Boolean).pop() || path;
}

// -- saved searches ------------------------------------------------------------------------

export class SavedSearchPanel {
  /**
   * elements: {name (input), save (button), confirm (the line that asks before
   * replacing or deleting), list}; hooks: {request() -> the search on screen (the body
   * of POST /api/search) or null, show(run, name) -> show a run's results,
   * error(error) -> one line}
   */
  constructor(elements, hooks) {
    this.elements = elements;
    this.hooks = hooks;
    this.searches = [];
    elements.save.addEventListener("click", () => this.save(false));
    elements.name.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.save(false);
      }
    });
  }

  async load() {
    try {
      this.searches = (await api.getJSON("/api/saved")).searches;
      this.render();
    } catch (error) {
      this.hooks.error(error);
    }
  }

  /** Save the search on screen under the name typed; a name in use asks first. */
  async save(replace) {
    this.hideConfirm();
    const name = this.elements.name.value.trim();
    const request = this.hooks.request();
    if (!request) {
      this.hooks.error(new Error("Search first: a saved search is the search on screen"));
      return;
    }
    if (!name) {
      this.hooks.error(new Error("Give the search a name"));
      this.elements.name.focus();
      return;
    }
    const query = new URLSearchParams({ name });
    if (replace) query.set("replace", "true");
    try {
      await api.postJSON(`/api/saved?${query}`, { ...request, offset: 0, limit: SAVED_PAGE });
      this.elements.name.value = "";
      await this.load();
    } catch (error) {
      if (error.status === 409) {
        this.askConfirm(`A saved search named “${name}” exists. Replace it?`, "Replace", () => this.save(true));
      } else {
        this.hooks.error(error);
      }
    }
  }

  /** Run a saved search (newOnly: only the images indexed since its last run). */
  async run(name, newOnly) {
    this.hideConfirm();
    try {
      const path = `/api/saved/${encodeURIComponent(name)}/run${newOnly ? "?new=true" : ""}`;
      const run = await api.postJSON(path, {});
      this.hooks.show(run, name);
      await this.load(); // its last run changed
    } catch (error) {
      this.hooks.error(error);
    }
  }

  remove(name) {
    this.askConfirm(`Delete the saved search “${name}”?`, "Delete", async () => {
      try {
        await api.deleteResource(`/api/saved/${encodeURIComponent(name)}`);
      } catch (error) {
        this.hooks.error(error);
      }
      await this.load();
    });
  }

  askConfirm(question, action, onYes) {
    const line = this.elements.confirm;
    const yes = button(action, null, () => {
      this.hideConfirm();
      onYes();
    }, "link confirm-yes");
    const no = button("Cancel", null, () => this.hideConfirm(), "link");
    line.replaceChildren(element("span", "", question), yes, no);
    line.hidden = false;
    yes.focus();
  }

  hideConfirm() {
    this.elements.confirm.hidden = true;
    this.elements.confirm.replaceChildren();
  }

  render() {
    const list = this.elements.list;
    if (!this.searches.length) {
      list.replaceChildren(element("li", "hint", "None yet: search, then save it under a name."));
      return;
    }
    list.replaceChildren(
      ...this.searches.map((saved) => {
        const item = element("li", "saved-item");
        item.dataset.name = saved.name;
        const head = element("div", "saved-head");
        head.append(element("span", "saved-name", saved.name));
        head.append(element("span", "saved-when muted", saved.last_run_at ? `ran ${when(saved.last_run_at)}` : "never run"));
        const query = element("div", "saved-query muted", saved.query);
        query.title = saved.query;
        const actions = element("div", "saved-actions");
        actions.append(
          button("Run", `Run saved search ${saved.name}`, () => this.run(saved.name, false), "saved-run"),
          button("New only", `Run saved search ${saved.name}: only images indexed since its last run`, () => this.run(saved.name, true), "saved-new"),
          button("Delete", `Delete saved search ${saved.name}`, () => this.remove(saved.name), "link saved-delete"),
        );
        item.append(head, query, actions);
        return item;
      }),
    );
  }
}

/** The summary line of a saved search's run. */
export function describeRun(run) {
  const count = run.results.length;
  if (!run.new_only) return `saved search “${run.name}” · ${run.query} · ${count} ${count === 1 ? "result" : "results"}`;
  const since = run.since ? `new since ${when(run.since)}` : "first run: all new";
  return `saved search “${run.name}” · ${run.query} · ${since} · ${count} new`;
}

// -- checking a case file --------------------------------------------------------------------

export class CaseFileCheck {
  /**
   * elements: {drop (the drop target), pick (button), input (file input), dialog,
   * verdict, facts, close}; hooks: {error(error) -> one line}
   */
  constructor(elements, hooks) {
    this.elements = elements;
    this.hooks = hooks;
    const { drop, pick, input } = elements;
    pick.addEventListener("click", () => input.click());
    drop.addEventListener("click", (event) => {
      if (event.target === drop) input.click();
    });
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
    input.addEventListener("change", () => {
      const [file] = input.files;
      input.value = "";
      if (file) this.check(file);
    });
    // Dropped here, a file is a case file (the page's own drop handler, for an image
    // to search by, leaves drops on this target alone and hides its overlay).
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) this.check(file);
    });
    elements.close.addEventListener("click", () => elements.dialog.close());
  }

  async check(file) {
    let text;
    try {
      text = await file.text();
      JSON.parse(text); // only to say at once what is no JSON at all
    } catch (_) {
      this.hooks.error(new Error(`${file.name || "that file"} is not JSON: choose a JSON case file (the JSON export)`));
      return;
    }
    this.elements.drop.setAttribute("aria-busy", "true");
    try {
      this.show(file.name, await api.postJSONText("/api/verify", text));
    } catch (error) {
      this.hooks.error(error);
    } finally {
      this.elements.drop.removeAttribute("aria-busy");
    }
  }

  show(name, found) {
    const { dialog, verdict, facts } = this.elements;
    dialog.dataset.verified = String(found.verified);
    verdict.textContent = found.verified ? `Verified: ${name}` : `Not verified: ${name}`;
    verdict.className = found.verified ? "verdict good" : "verdict bad";
    const rows = [];
    const row = (term, text, className = "", details = []) => {
      const dt = element("dt", "", term);
      const dd = element("dd", className, text);
      dd.dataset.fact = term.toLowerCase().replace(/\W+/g, "-");
      if (details.length) {
        const list = element("ul", "verify-list");
        list.append(...details.map((line) => element("li", "", line)));
        dd.append(list);
      }
      rows.push(dt, dd);
    };
    if (!found.case_sealed) row("Case file", "not sealed (it has no digest: edits to it cannot be seen)", "warn");
    else if (found.case_intact) row("Case file", `sealed${found.seal_format === 1 ? " (format 1)" : ""}, unchanged since it was exported`, "good");
    else row("Case file", "edited since it was exported (its digest does not match its content)", "bad");
    if (found.rerun_problem) row("Results", `not searched again: ${found.rerun_problem}`, "bad");
    else if (found.same_results) row("Results", `the same ${found.results_checked} results come back`, "good");
    else row("Results", `${found.result_changes.length} of ${found.results_checked} differ`, "bad", found.result_changes);
    if (!found.file_changes.length) row("Files", `none of the ${found.results_checked} files changed`, "good");
    else {
      const changes = found.file_changes.map((change) => {
        const now = change.sha256_now ? `changed (SHA-256 ${short(change.recorded_sha256)} → ${short(change.sha256_now)})` : "missing or unreadable now";
        return `#${change.rank} ${change.path}: ${now}`;
      });
      row("Files", `${found.file_changes.length} changed since the export`, "bad", changes);
    }
    const index = (state) => `${state.files.toLocaleString()} files, ${state.images.toLocaleString()} images, digest ${short(state.digest)}`;
    row("Index then", index(found.index_then));
    row("Index now", `${index(found.index_now)}${found.index_changed ? " (changed since)" : ""}`, found.index_changed ? "warn" : "");
    row("Model", found.model_then === found.model_now ? found.model_now : `${found.model_then} then, ${found.model_now} now`, found.model_then === found.model_now ? "" : "warn");
    facts.replaceChildren(...rows);
    if (!dialog.open) dialog.showModal();
  }
}

function short(digest) {
  return digest ? `${digest.slice(0, 12)}…` : "none";
}

// -- near-duplicate groups -------------------------------------------------------------------

export class DuplicatesView {
  /**
   * elements: {summary, groups (list), more (button), empty, threshold (input)};
   * hooks: {open(id) -> show the image, error(error) -> one line}
   */
  constructor(elements, hooks) {
    this.elements = elements;
    this.hooks = hooks;
    this.data = null;
    this.limit = GROUPS_FETCHED;
    this.shown = 0;
    this.loading = false;
    elements.more.addEventListener("click", () => this.more());
    const rethreshold = () => {
      if (this.data && this.data.asked === elements.threshold.value.trim()) return;
      this.data = null;
      this.limit = GROUPS_FETCHED;
      this.shown = 0;
      this.load();
    };
    elements.threshold.addEventListener("change", rethreshold);
    elements.threshold.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        rethreshold();
      }
    });
  }

  /** Fetch the groups (once; again when the threshold changes) and show the first. */
  async load() {
    if (this.data || this.loading) return;
    this.loading = true;
    const { summary, groups, more, empty } = this.elements;
    summary.textContent = "Finding near-duplicates…";
    more.hidden = true;
    empty.hidden = true;
    try {
      const query = new URLSearchParams({ limit: String(this.limit) });
      const threshold = this.elements.threshold.value.trim();
      if (threshold) query.set("threshold", threshold);
      const data = await api.getJSON(`/api/duplicates?${query}`);
      data.asked = threshold;
      this.data = data;
      if (!threshold) this.elements.threshold.placeholder = String(data.threshold);
      const keep = Math.max(this.shown, GROUPS_SHOWN);
      groups.replaceChildren();
      this.shown = 0;
      this.add(keep);
      document.body.dataset.duplicates = String(data.total);
    } catch (error) {
      summary.textContent = "";
      this.hooks.error(error);
    } finally {
      this.loading = false;
    }
    // The threshold changed while these groups were found: find them again.
    if (this.data && this.data.asked !== this.elements.threshold.value.trim()) {
      this.data = null;
      await this.load();
    }
  }

  /** The next groups: those fetched, then more from the server. */
  async more() {
    if (this.shown < this.data.groups.length) this.add(GROUPS_SHOWN);
    else if (this.data.total > this.data.groups.length) {
      this.limit = Math.min(this.limit * 2, 10000);
      this.shown += GROUPS_SHOWN;
      this.data = null;
      await this.load();
    }
  }

  add(count) {
    const { summary, groups, more, empty } = this.elements;
    const data = this.data;
    const next = data.groups.slice(this.shown, this.shown + count);
    groups.append(...next.map((group) => this.group(group)));
    this.shown += next.length;
    const showing = this.shown < data.total ? ` · showing ${this.shown.toLocaleString()}` : "";
    summary.textContent = data.total
      ? `${data.total.toLocaleString()} ${data.total === 1 ? "group" : "groups"}, largest first${showing} · ${data.rule}`
      : `No near-duplicates · ${data.rule}`;
    summary.title = data.rule;
    empty.hidden = data.total > 0;
    more.hidden = this.shown >= data.total;
  }

  group(group) {
    const item = element("li", "dup-group");
    item.dataset.group = String(group.group);
    const head = element("div", "dup-head");
    head.append(
      element("span", "dup-size", `${group.size} images`),
      element("span", "muted", `weakest similarity ${group.weakest.toFixed(3)}`),
    );
    const members = element("div", "dup-members");
    members.append(
      ...group.members.map((member) => {
        const tile = button("", `Open image #${member.id}: ${member.path || "removed"}`, () => this.hooks.open(member.id), "dup-member");
        tile.dataset.id = String(member.id);
        tile.title = member.paths.join("\n") || `image #${member.id}`;
        const img = element("img");
        img.alt = "";
        img.loading = "lazy";
        img.decoding = "async";
        img.src = api.thumbnailUrl(member.id);
        img.addEventListener("error", () => img.classList.add("missing"));
        const name = element("span", "dup-name", member.path ? fileName(member.path) : `#${member.id}`);
        tile.append(img, name);
        return tile;
      }),
    );
    item.append(head, members);
    return item;
  }
}
