// The HTTP API, as the browser uses it: same origin, the session cookie
// (HttpOnly, set by POST /api/session), JSON in and out, RFC 9457 problems
// turned into errors that carry the field they are about.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.field = problem?.field;
    this.problem = problem;
  }
}

export async function api(method, path, body, headers = {}) {
  const init = { method, headers: { accept: "application/json", ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { detail: "the shop cannot be reached: check that jetsaga is running" });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body, headers) => api("POST", path, body ?? {}, headers);
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);

/** The signed-in user, or null. */
export async function me() {
  try {
    return await get("/api/me");
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

/** A query string from the entries that have a value. */
export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? `?${new URLSearchParams(entries)}` : "";
}
