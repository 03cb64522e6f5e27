// Promotions: the report (per-class metrics side by side, the picture), the policy's verdict,
// approve or refuse with a reason (an explicit override when the policy refused); for admins,
// the audit trail and a rollback.
import { api, blobUrl, type RunInfo } from "../api";
import { field, h, status } from "../dom";
import { may, type Session } from "../session";

type Json = Record<string, unknown>;

function verdictOf(report: Json, run: RunInfo): { passed: boolean | null; text: string } {
  const v = report.verdict ?? report.decision ?? report.policy;
  if (v && typeof v === "object") {
    const o = v as Json;
    const passed = typeof o.passed === "boolean" ? o.passed : typeof o.approved === "boolean" ? o.approved : null;
    return { passed, text: String(o.reason ?? o.message ?? JSON.stringify(o)) };
  }
  if (typeof report.passed === "boolean") return { passed: report.passed, text: String(report.reason ?? "") };
  return { passed: null, text: typeof v === "string" ? v : run.message };
}

/** Per-class metrics side by side: rows are classes (or metrics), columns are the versions. */
function comparison(report: Json): HTMLElement {
  const table = h("table", { class: "report" }, h("caption", { text: "Metrics, production beside candidate" }));
  const sides = ["production", "candidate"];
  const rows = new Map<string, Record<string, unknown>>();
  const collect = (side: string, value: unknown, prefix = ""): void => {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value as Json)) collect(side, v, prefix ? `${prefix} ${k}` : k);
    } else if (typeof value === "number" || typeof value === "string") {
      const row = rows.get(prefix) ?? {};
      row[side] = value;
      rows.set(prefix, row);
    }
  };
  const source = (report.metrics ?? report.classes ?? report) as Json;
  for (const side of sides) collect(side, source[side] ?? (report[side] as Json | undefined)?.metrics ?? report[side]);
  table.append(h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Metric" }), ...sides.map((s) => h("th", { scope: "col", text: s })))));
  const body = h("tbody");
  for (const [name, row] of rows) {
    body.append(h("tr", {}, h("th", { scope: "row", text: name }), ...sides.map((s) => {
      const v = row[s];
      return h("td", { text: typeof v === "number" ? v.toFixed(4) : String(v ?? "–") });
    })));
  }
  table.append(body);
  return table;
}

export async function promotionsPage(root: HTMLElement, session: Session, runId?: string): Promise<void> {
  const say = status();
  const panel = h("section", { class: "panel wide", "aria-labelledby": "pro-h" }, h("h2", { id: "pro-h", text: "Promotions" }), say);
  root.append(panel);
  let runs: RunInfo[] = [];
  try {
    runs = (await api.runs()).filter((r) => r.pipeline === "promotion");
  } catch (err) {
    say.say((err as Error).message, true);
  }
  const list = h("ul", { class: "runs", "aria-label": "Promotion runs" });
  for (const r of runs)
    list.append(h("li", {}, h("a", { href: `#/promotions/${encodeURIComponent(r.run_id)}`, text: r.run_id, "aria-current": r.run_id === runId ? "page" : undefined }), ` ${r.parameters.model ?? ""} candidate ${r.parameters.candidate ?? ""}: ${r.phase}${r.waiting_gate ? " (waiting for a decision)" : ""}`));
  if (!runs.length) list.append(h("li", { class: "muted", text: "No promotion run." }));
  panel.append(list);

  if (runId) await decision(panel, session, runId);
  if (may(session, "admin")) await adminPanel(root, session);
}

async function decision(panel: HTMLElement, session: Session, runId: string): Promise<void> {
  const say = status();
  const box = h("section", { class: "decision", "aria-labelledby": "dec-h" }, h("h3", { id: "dec-h", text: `Promotion run ${runId}` }), say);
  panel.append(box);
  let run: RunInfo;
  let report: Json = {};
  try {
    run = await api.run(runId);
  } catch (err) {
    say.say((err as Error).message, true);
    return;
  }
  try {
    report = await api.report(runId);
  } catch (err) {
    say.say(`report: ${(err as Error).message}`, true);
  }
  const verdict = verdictOf(report, run);
  box.append(
    h("p", { class: `verdict ${verdict.passed === false ? "refused" : verdict.passed ? "passed" : ""}`, "data-passed": String(verdict.passed) },
      h("strong", { text: `Policy verdict: ${verdict.passed === null ? "unknown" : verdict.passed ? "passes" : "refuses"}` }), ` ${verdict.text}`),
    h("p", { text: `Phase: ${run.phase}${run.waiting_gate ? `, waiting at ${run.waiting_gate}` : ""}` }),
  );
  const figure = h("figure", { class: "report-picture" });
  box.append(h("div", { class: "side-by-side" }, comparison(report), figure));
  blobUrl(`/runs/${encodeURIComponent(runId)}/report.png`)
    .then((src) => figure.append(h("img", { src, alt: "Comparison of production and candidate predictions on the evaluation data" }), h("figcaption", { text: "Comparison picture" })))
    .catch(() => figure.append(h("figcaption", { class: "muted", text: "No comparison picture." })));

  const gate = run.tasks.find((t) => t.approval);
  if (gate?.approval) box.append(h("p", { text: `Decided by ${gate.approval.approver}: ${gate.approval.reason}` }));
  if (!may(session, "decide")) {
    box.append(h("p", { class: "muted", text: `Your role (${session.who.role}) may not approve or refuse promotions.` }));
    return;
  }
  if (!run.waiting_gate) return;
  const reason = h("textarea", { name: "reason", rows: 2, required: true });
  const override = h("input", { type: "checkbox", name: "override", id: "override" });
  const approve = h("button", { type: "submit", class: "primary", text: "Approve" });
  const refuse = h("button", { type: "button", text: "Refuse" });
  const form = h("form", { "aria-label": "Decide the promotion" },
    field("Reason (recorded with the decision)", reason),
    verdict.passed === false ? h("div", { class: "field inline" }, override, h("label", { for: "override", text: "Override: approve although the policy refused" })) : null,
    h("div", { class: "actions" }, approve, refuse));
  box.append(form);
  const act = async (what: "approve" | "refuse"): Promise<void> => {
    if (!reason.value.trim()) {
      say.say("reason: give a reason for the decision", true);
      reason.focus();
      return;
    }
    if (what === "approve" && verdict.passed === false && !override.checked) {
      say.say("The policy refused this candidate: tick the override to approve it anyway", true);
      override.focus();
      return;
    }
    try {
      const done = what === "approve" ? await api.approve(runId, reason.value.trim(), override.checked) : await api.refuse(runId, reason.value.trim());
      say.say(`${what === "approve" ? "Approved" : "Refused"}: run ${runId} is ${done.phase}`);
      form.remove();
    } catch (err) {
      say.say((err as Error).message, true);
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void act("approve");
  });
  refuse.addEventListener("click", () => void act("refuse"));
}

async function adminPanel(root: HTMLElement, _session: Session): Promise<void> {
  const say = status();
  const model = h("select", { name: "rollback-model" });
  const reason = h("input", { type: "text", name: "rollback-reason" });
  const form = h("form", { "aria-label": "Roll back production" }, field("Model", model), field("Reason", reason), h("button", { type: "submit", text: "Roll back production to the previous version" }));
  const audit = h("table", { class: "audit" }, h("caption", { text: "Audit trail (newest first)" }));
  root.append(h("section", { class: "panel wide", "aria-labelledby": "adm-h" }, h("h2", { id: "adm-h", text: "Administration" }), say, form, audit));
  try {
    for (const m of await api.models({})) model.append(h("option", { value: m.id, text: `${m.id} (production ${m.aliases.production ?? "none"})` }));
  } catch (err) {
    say.say((err as Error).message, true);
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!reason.value.trim()) {
      say.say("reason: give a reason for the rollback", true);
      return;
    }
    try {
      const answer = (await api.rollback(model.value, reason.value.trim())) as Json;
      say.say(`Rolled back ${model.value}: ${JSON.stringify(answer)}`);
    } catch (err) {
      say.say((err as Error).message, true);
    }
  });
  try {
    const records = await api.audit();
    audit.append(h("thead", {}, h("tr", {}, ...["When", "Who", "Role", "Action", "Target", "Status", "Detail"].map((t) => h("th", { scope: "col", text: t })))));
    const body = h("tbody");
    for (const r of records.slice(0, 100))
      body.append(h("tr", {}, ...[r.at, r.actor, r.role, `${r.method} ${r.action}`, r.target, String(r.status), r.detail].map((t) => h("td", { text: t }))));
    audit.append(body);
  } catch (err) {
    say.say(`audit: ${(err as Error).message}`, true);
  }
}
