// The filter panel: facets with counts (GET /api/facets) to click, and date and size
// fields, turned into the search request's `filters` object. Values of one facet
// combine with "or" (any of these folders, formats or years), facets with "and". An
// image's date is its EXIF capture time, else its file's time. With filters set, each
// facet's counts are over the images the other filters keep (what choosing a value
// would give): the panel asks for them again whenever the filters change.

const FACETS = [
  ["folders", "Folder"],
  ["years", "Year"],
  ["cameras", "Camera"],
  ["formats", "Format"],
  ["gps", "GPS position"],
];

export class FilterPanel {
  /** box: where the facet lists go; fields: {after, before, minSize, clear} inputs;
   * onChange: called when the filters change. */
  constructor(box, fields, onChange) {
    this.box = box;
    this.fields = fields;
    this.onChange = onChange;
    this.chosen = new Map(FACETS.map(([name]) => [name, new Set()]));
    for (const input of [fields.after, fields.before, fields.minSize]) {
      input.addEventListener("change", () => this.onChange());
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          this.onChange();
        }
      });
    }
    fields.clear.addEventListener("click", () => {
      this.clear();
      this.onChange();
    });
  }

  /** Show the facets of the collection: one button per value, with its count. */
  show(facets) {
    this.facets = facets;
    const sections = [];
    for (const [name, title] of FACETS) {
      const chosen = this.chosen.get(name);
      const counts = { ...(facets[name] || {}) };
      // A chosen value stays to be taken off, even where the other filters leave it none.
      for (const value of chosen) if (!(value in counts)) counts[value] = 0;
      const entries = Object.entries(counts).filter(([value, count]) => count > 0 || chosen.has(value));
      if (!entries.length || (name === "gps" && entries.length < 2 && !facets.gps.yes && !chosen.size)) continue;
      const section = document.createElement("div");
      section.className = "facet";
      section.dataset.facet = name;
      const head = document.createElement("h3");
      head.textContent = title;
      const list = document.createElement("div");
      list.className = "facet-values";
      for (const [value, count] of entries.slice(0, 30)) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "facet-value";
        button.dataset.value = value;
        button.setAttribute("aria-pressed", String(this.chosen.get(name).has(value)));
        button.title = value;
        const label = document.createElement("span");
        label.className = "facet-label";
        label.textContent = name === "folders" ? lastPart(value) : name === "gps" ? (value === "yes" ? "with GPS" : "without GPS") : value;
        const number = document.createElement("span");
        number.className = "facet-count";
        number.textContent = count.toLocaleString();
        button.append(label, number);
        button.addEventListener("click", () => this.toggle(name, value));
        list.append(button);
      }
      section.append(head, list);
      sections.push(section);
    }
    this.box.replaceChildren(...sections);
  }

  toggle(name, value) {
    const values = this.chosen.get(name);
    if (values.has(value)) values.delete(value);
    else {
      // A camera or GPS choice is one value (the API takes one); the others add up.
      if (name === "cameras" || name === "gps") values.clear();
      values.add(value);
    }
    for (const button of this.box.querySelectorAll(`[data-facet="${name}"] .facet-value`)) {
      button.setAttribute("aria-pressed", String(values.has(button.dataset.value)));
    }
    this.onChange();
  }

  clear() {
    for (const values of this.chosen.values()) values.clear();
    for (const button of this.box.querySelectorAll(".facet-value")) button.setAttribute("aria-pressed", "false");
    this.fields.after.value = this.fields.before.value = this.fields.minSize.value = "";
  }

  /** The request's `filters` object, or undefined when nothing is chosen. */
  current() {
    const filters = {};
    const folders = [...this.chosen.get("folders")];
    if (folders.length) filters.under = folders;
    const formats = [...this.chosen.get("formats")];
    if (formats.length) filters.formats = formats;
    const [camera] = this.chosen.get("cameras");
    if (camera) filters.camera = camera;
    const [gps] = this.chosen.get("gps");
    if (gps) filters.has_gps = gps === "yes";
    const years = [...this.chosen.get("years")].sort();
    const after = this.fields.after.value.trim();
    const before = this.fields.before.value.trim();
    // Years chosen span from the first to the last; typed dates take precedence.
    if (after || years.length) filters.after = after || years[0];
    if (before || years.length) filters.before = before || years[years.length - 1];
    const minSize = this.fields.minSize.value.trim();
    if (minSize) filters.min_size = minSize;
    return Object.keys(filters).length ? filters : undefined;
  }

  /** The filters as GET /api/facets's query parameters ("" for none). */
  facetQuery() {
    const filters = this.current();
    if (!filters) return "";
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filters)) {
      for (const one of Array.isArray(value) ? value : [value]) query.append(key, String(one));
    }
    return `?${query}`;
  }

  /** How many filters are set, for the panel's heading. */
  count() {
    const filters = this.current();
    return filters ? Object.keys(filters).length : 0;
  }
}

function lastPart(path) {
  const parts = path.split("/").filter(Boolean);
  return parts.length ? parts[parts.length - 1] : path;
}
