// The board's actions: the remote gate (kiosk page) and the 一键三查 lookup.

import { call, clock, el, t, when } from "./util.js";

/** Show `text` in an <output>, marked ok or fault. */
function say(out, text, ok) {
  out.textContent = text;
  out.className = ok ? "ok" : "fault";
}

/** "Open gate": POST with the required reason; shows the kiosk's acknowledgement. */
export function gate(form) {
  const out = form.querySelector("output");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(out, "…", true);
    const url = `/v1/guard/kiosks/${encodeURIComponent(form.dataset.device)}/gate`;
    try {
      const answer = await call("POST", url, { reason: form.elements.reason.value });
      say(out, `${t("gate_acked")} ${clock(answer.acked_at)}`, true);
      form.elements.reason.value = "";
    } catch (error) {
      say(out, `${t("failed")}: ${error.message}`, false);
    }
  });
}

/** The site-check buttons: speak the test prompt, reload the configuration. */
export function commands(box) {
  const out = box.querySelector("output");
  const url = `/v1/guard/kiosks/${encodeURIComponent(box.dataset.device)}/commands`;
  for (const button of box.querySelectorAll("button[data-command]")) {
    button.addEventListener("click", async () => {
      say(out, "…", true);
      try {
        const answer = await call("POST", url, { command: button.dataset.command });
        say(out, `${t("command_acked")} ${clock(answer.acked_at)}`, true);
      } catch (error) {
        say(out, `${t("failed")}: ${error.message}`, false);
      }
    });
  }
}

const list = (items, show) => el("ul", {}, ...(items || []).map((i) => el("li", {}, show(i))));
const recovery = (item) => (typeof item === "string" ? item : `${t(item.reason)}：${item.text}`);
const shown = (k, v) => (k.endsWith("_at") ? when(v) : t(String(v)));

/** One line of facts: "key: value" for each field given, lists item by item. */
function facts(item) {
  if (Array.isArray(item)) return item.map(facts).join(" / ");
  if (typeof item !== "object" || item === null) return t(String(item));
  return Object.entries(item)
    .filter(([k, v]) => v !== null && v !== "" && k !== "origin" && !(Array.isArray(v) && !v.length))
    .map(([k, v]) => (typeof v === "object" ? facts(v) : `${t(k)}: ${shown(k, v)}`))
    .join(" · ");
}

/** The four checks behind the decision, one line each. */
function checks(all) {
  const dl = el("dl", { class: "checks" });
  for (const [name, value] of Object.entries(all || {})) {
    dl.append(el("dt", {}, t(name)), el("dd", { "data-check": name }, facts(value)));
  }
  return dl;
}

/** The lookup: the number goes in a POST body, never a URL; the field is cleared after. */
export function lookup(form) {
  const out = document.getElementById("lookup-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { id_number: id, phone } = form.elements;
    const body = id.value.trim() ? { id_number: id.value.trim() } : { phone: phone.value.trim() };
    body.lang = document.documentElement.lang;
    if (form.elements.site) body.site = form.elements.site.value;
    id.value = phone.value = "";
    try {
      const r = await call("POST", "/v1/guard/lookup", body);
      out.replaceChildren(
        el("h3", { class: r.outcome, id: "lookup-outcome" }, `${r.masked_id || ""} · ${t(r.outcome)}`),
        el("h4", {}, t("reasons")), list(r.reasons, t),
        el("h4", {}, t("recovery")), list(r.recovery, recovery),
        el("h4", {}, t("checks")), checks(r.checks));
    } catch (error) {
      out.replaceChildren(el("p", { class: "fault" }, `${t("failed")}: ${error.message}`));
    }
  });
}
