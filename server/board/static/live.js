// The board, live: GET /v1/guard/events (server-sent events, already cut to this person's
// sites) patches the kiosk cards, today's counts and the recent taps. A tap is drawn from the
// event itself; a change of a kiosk's state fetches that kiosk's card, rendered by the server.

import { clock, row, t } from "./util.js";

const MAX_ROWS = 30;
const waiting = new Map();

const card = (id) => (id ? document.getElementById(`kiosk-${id}`) : null);

/** Swap in the kiosk's card as the server renders it now (several events: one fetch). */
function refresh(id) {
  if (!card(id) || waiting.has(id)) return;
  waiting.set(id, setTimeout(async () => {
    waiting.delete(id);
    try {
      const response = await fetch(`/board/kiosks/${encodeURIComponent(id)}/card`);
      if (!response.ok) return;
      const html = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = html.querySelector("article.kiosk");
      if (fresh && card(id)) card(id).replaceWith(fresh);
    } catch {
      // the server is away: the stream's reconnection reloads the page
    }
  }, 150));
}

function bump(node) {
  if (node) node.textContent = String(Number(node.textContent) + 1);
}

function tap(data, at) {
  const kiosk = card(data.device_id);
  if (!kiosk) return;
  bump(kiosk.querySelector(`[data-count="${data.outcome}"] b`));
  bump(document.querySelector(`[data-total="${data.outcome}"] b`));
  kiosk.querySelector('[data-field="last_tap"]').textContent = `${clock(at)} ${t(data.outcome)}`;
  const rows = document.getElementById("taps");
  if (!rows) return;
  rows.prepend(row(data.outcome, clock(at), data.site, kiosk.dataset.gate, kiosk.dataset.serial,
    data.masked_id || "—", t(data.outcome), (data.reasons || []).join(", "),
    data.offline ? t("yes") : t("no")));
  while (rows.rows.length > MAX_ROWS) rows.deleteRow(-1);
}

function seen(data, at) {
  const kiosk = card(data.device_id);
  if (!kiosk) return;
  if (data.back || kiosk.classList.contains("down")) refresh(data.device_id);
  else kiosk.querySelector('[data-field="last_seen"]').textContent = clock(at);
}

const HANDLERS = {
  tap: (e) => tap(e.data, e.at),
  kiosk_up: (e) => seen(e.data, e.at),
  dropped: () => location.reload(), // events were lost: start again from the server's view
};

function handle(event) {
  (HANDLERS[event.kind] || ((e) => refresh(e.data.device_id)))(event);
  document.dispatchEvent(new CustomEvent("board-event", { detail: event }));
}

/** Listen; after a broken stream the page reloads once it reconnects (events were missed). */
export function listen() {
  const badge = document.getElementById("live");
  const site = document.body.dataset.site;
  const source = new EventSource(`/v1/guard/events${site ? `?site=${encodeURIComponent(site)}` : ""}`);
  let broken = false;
  source.addEventListener("open", () => {
    if (broken) location.reload();
    badge.hidden = false;
    badge.classList.remove("off");
    badge.textContent = `● ${t("live")}`;
  });
  source.addEventListener("error", () => {
    broken = true;
    badge.classList.add("off");
    badge.textContent = t("reconnecting");
    if (source.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 5000);
  });
  source.addEventListener("message", (m) => handle(JSON.parse(m.data)));
}
