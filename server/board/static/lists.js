// Lists read from the public API: open alerts (acknowledged with a note) and the audit trail.

import { call, clock, el, row, t, when } from "./util.js";

function ackForm(alert, reload) {
  const note = el("input", { name: "note", required: "", placeholder: t("note") });
  const form = el("form", { class: "inline" }, note, el("button", { type: "submit" }, t("ack")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await call("POST", `/v1/guard/alerts/${encodeURIComponent(alert.id)}/ack`, { note: note.value });
    reload();
  });
  return form;
}

/** The alerts page: reloaded whenever an alert event arrives. */
export function alerts(tbody) {
  const reload = async () => {
    const { alerts: found = [] } = await call("GET", "/v1/guard/alerts");
    tbody.replaceChildren(...found.map((a) => row(a.level || a.kind,
      when(a.raised_at), a.site, a.gate || "", a.device_id || "", t(a.kind),
      Object.entries(a.detail || {}).map(([k, v]) => `${t(k)}: ${v}`).join("; "),
      a.acked_at ? `${t("acked")} · ${a.acked_by || ""} · ${a.note || ""}` : ackForm(a, reload))));
    document.getElementById("no-alerts").hidden = found.length > 0;
  };
  document.addEventListener("board-event", (e) => {
    if (e.detail.kind.startsWith("alert_")) reload().catch(() => {}); // next event retries
  });
  return reload();
}

const LOCAL_TIMES = new Set(["since", "until"]);
const reasons = (e) => (e.reasons || e.detail?.reasons || []).join(", ");

/** The audit page: the filter form queries /v1/audit/events; "more" follows `next`. */
export function audit(form) {
  const tbody = document.getElementById("events");
  const more = document.getElementById("more");
  let next = null;
  let query = "";
  const load = async (append) => {
    const cursor = append && next ? `&cursor=${encodeURIComponent(next)}` : "";
    const page = await call("GET", `/v1/audit/events?${query}${cursor}`);
    const rows = page.events.map((e) => row(e.outcome || e.kind, when(e.wall_time),
      e.site || "", e.gate || "", e.device_id, t(e.kind), e.masked_id || "—",
      e.outcome ? t(e.outcome) : "", reasons(e), e.offline ? t("yes") : t("no")));
    if (append) tbody.append(...rows);
    else tbody.replaceChildren(...rows);
    next = page.next;
    more.hidden = !next;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      // datetime-local has no offset: the board's times are China time
      if (value) params.set(name, LOCAL_TIMES.has(name) ? `${value}:00+08:00` : value);
    }
    query = params.toString();
    params.delete("limit"); // an export has every matching event
    for (const link of document.querySelectorAll("a[data-format]")) {
      link.href = `/v1/audit/export?format=${link.dataset.format}&${params}`;
    }
    load(false);
  });
  more.addEventListener("click", () => load(true));
  form.requestSubmit();
}
