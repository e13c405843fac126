// Entry point of every board page: live events everywhere, plus the page's own parts.
// No inline script anywhere: the pages run under Content-Security-Policy script-src 'self'.

import { commands, gate, lookup } from "./forms.js";
import { listen } from "./live.js";
import { alerts, audit } from "./lists.js";

const page = document.body.dataset.page;
const find = (id) => document.getElementById(id);

if (page !== "login" && page !== "error") listen();
if (page === "kiosk" && find("gate-form")) {
  gate(find("gate-form"));
  commands(find("commands"));
}
if (page === "lookup") lookup(find("lookup-form"));
if (page === "alerts") alerts(find("alerts"));
if (page === "audit") audit(find("audit-form"));
