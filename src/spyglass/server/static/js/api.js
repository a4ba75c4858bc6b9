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

/** Download a search's results as a file (CSV or JSON). */
export async function exportResults(body) {
  const response = await request("POST", "/api/export", { json: body });
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = match ? match[1] : `spyglass-results.${body.format}`;
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
