// Talking to the Spyglass API: JSON in, JSON out, errors as ApiError with the server's
// short message. The session cookie (after the token dialog) rides along by itself.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorised = () => {};

/** Called with a retry function whenever the server answers 401. */
export function setUnauthorisedHandler(handler) {
  onUnauthorised = handler;
}

async function errorFrom(response) {
  try {
    const body = await response.json();
    if (body && body.error) return new ApiError(response.status, body.error.code, body.error.message);
  } catch (_) {
    // not JSON: fall through
  }
  return new ApiError(response.status, "http-" + response.status, `the server answered ${response.status}`);
}

async function request(method, path, { json, form, headers = {}, signal } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin", signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    onUnauthorised();
    throw await errorFrom(response);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function getJSON(path, options) {
  return (await request("GET", path, options)).json();
}

export async function postJSON(path, body, options = {}) {
  return (await request("POST", path, { ...options, json: body })).json();
}

/** POST JSON as the text it is, not parsed and written again: a case file sealed by an
 * earlier version (seal format 1) has a digest of its exact numbers, and JavaScript
 * would write 1.0 back as 1. */
export async function postJSONText(path, text) {
  const headers = { "Content-Type": "application/json" };
  return (await request("POST", path, { form: text, headers })).json();
}

/** DELETE a resource; the server answers 204 with no body. */
export async function deleteResource(path) {
  await request("DELETE", path);
}

/** Status and JSON body, for endpoints that answer 202 while working. */
export async function getWithStatus(path) {
  const response = await request("GET", path);
  return { status: response.status, body: await response.json() };
}

export async function uploadImage(file) {
  const form = new FormData();
  form.append("image", file, file.name || "pasted-image");
  return (await request("POST", "/api/uploads", { form })).json();
}

/**
 * Download all ``total`` results of a search as one file (CSV or JSON). The server
 * exports at most ``pageSize`` per request, so larger result lists are fetched page
 * by page and joined here: CSV pages without their header row, JSON pages' results.
 */
export async function exportResults(body, total, pageSize) {
  const pages = [];
  let name = null;
  let type = "";
  for (let offset = 0; offset < total; offset += pageSize) {
    const limit = Math.min(pageSize, total - offset);
    const response = await request("POST", "/api/export", { json: { ...body, offset, limit } });
    if (name === null) {
      const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
      name = match ? match[1] : `spyglass-results.${body.format}`;
      type = response.headers.get("Content-Type") || "";
    }
    pages.push(await response.text());
  }
  let content;
  if (pages.length === 1) {
    content = pages[0]; // as the server wrote it: a JSON case file's digest holds
  } else if (body.format === "json") {
    const [first, ...rest] = pages.map((text) => JSON.parse(text));
    for (const page of rest) first.results.push(...page.results);
    first.count = first.results.length;
    first.request.limit = first.count; // what the joined file holds
    if (first.search) {
      // A case file joined from pages: its search is the whole ranking, and its digest
      // (of the first page) no longer holds, so it goes (verify says it is missing).
      first.search.k = first.count;
      delete first.digest;
    }
    content = JSON.stringify(first, null, 2) + "\n";
  } else {
    // The header row is the first line (column names hold no line breaks).
    content = pages.map((text, n) => (n === 0 ? text : text.slice(text.indexOf("\n") + 1))).join("");
  }
  const url = URL.createObjectURL(new Blob([content], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return link.download;
}

/** Trade a token for the session cookie. */
export async function openSession(token) {
  const response = await fetch("/api/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { Authorization: "Bearer " + token },
  });
  if (!response.ok) throw await errorFrom(response);
}

export function thumbnailUrl(id, size = 256) {
  return size === 256 ? `/api/images/${id}/thumbnail` : `/api/images/${id}/thumbnail?size=${size}`;
}

/** Why result ``body.id`` matched the search ``body``: its image with the heatmap over
 * it (POST /api/explain), as an object URL for an <img>. */
export async function explainImage(body) {
  const response = await request("POST", "/api/explain", { json: { ...body, format: "png" } });
  return URL.createObjectURL(await response.blob());
}
