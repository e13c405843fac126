// Small helpers shared by the board's modules: texts, times, DOM and the JSON API.

export const texts = JSON.parse(document.body.dataset.texts || "{}");

/** The page's word for `key` (an outcome, a state...), or the key itself. */
export const t = (key) => texts[key] ?? key ?? "";

/** HH:MM:SS in China time, as the server renders it; `at` is unix seconds or ISO text. */
export function clock(at) {
  if (at === null || at === undefined || at === "") return "—";
  const moment = new Date(typeof at === "number" ? at * 1000 : at);
  if (Number.isNaN(moment.getTime())) return String(at);
  return moment.toLocaleTimeString("en-GB", { timeZone: "Asia/Shanghai", hour12: false });
}

/** YYYY-MM-DD HH:MM:SS in China time (the audit trail's rows). */
export function when(at) {
  const moment = new Date(at);
  if (!at || Number.isNaN(moment.getTime())) return at ? String(at) : "—";
  return moment.toLocaleString("sv-SE", { timeZone: "Asia/Shanghai" });
}

/** An element with attributes and children (strings become text: never parsed as HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

/** A table row of cells (strings or nodes). */
export function row(cls, ...cells) {
  return el("tr", { class: cls || "" }, ...cells.map((c) => el("td", {}, c)));
}

const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

/** Call the JSON API with the session cookie; changes carry the CSRF token. */
export async function call(method, url, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || data.error || `HTTP ${response.status}`);
  return data;
}
