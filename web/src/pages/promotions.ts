// Promotions: the report (per-class metrics side by side, the picture), the policy's verdict,
// approve or refuse with a reason (an explicit override when the policy refused); for admins,
// the audit trail and a rollback.
import { api, blobUrl, type PromotionReport, type RunInfo } from "../api";
import { field, h, status } from "../dom";
import { may, type Session } from "../session";

/** Per-class metrics side by side: one row per metric, production beside the candidate. */
function comparison(report: PromotionReport): HTMLElement {
  const prod = report.production ? `production (version ${report.production})` : "production (none)";
  const table = h("table", { class: "report" }, h("caption", { text: `Metrics: ${prod} beside candidate version ${report.candidate}` }));
  table.append(h("thead", {}, h("tr", {}, ...["Metric", prod, `candidate ${report.candidate}`, "Change"].map((t) => h("th", { scope: "col", text: t })))));
  const body = h("tbody");
  const fmt = (v: number | null): string => (v === null ? "–" : Number.isInteger(v) ? String(v) : v.toFixed(4));
  for (const m of report.metrics) {
    const change = m.candidate !== null && m.production !== null ? m.candidate - m.production : null;
    body.append(
      h("tr", { class: m.name === report.primary_metric ? "primary" : undefined },
        h("th", { scope: "row", text: m.name === report.primary_metric ? `${m.name} (policy)` : m.name }),
        h("td", { text: fmt(m.production) }),
        h("td", { text: fmt(m.candidate) }),
        h("td", { text: change === null ? "–" : `${change >= 0 ? "+" : ""}${change.toFixed(4)}` })),
    );
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
  const rest = (r: RunInfo): string => ` ${r.parameters.model ?? ""} candidate ${r.parameters.candidate ?? ""}: ${r.phase}${r.waiting_gate ? " (waiting for a decision)" : ""}`;
  const items = new Map<string, Text>();
  for (const r of runs) {
    const text = document.createTextNode(rest(r));
    items.set(r.run_id, text);
    list.append(h("li", {}, h("a", { href: `#/promotions/${encodeURIComponent(r.run_id)}`, text: r.run_id, "aria-current": r.run_id === runId ? "page" : undefined }), text));
  }
  if (!runs.length) list.append(h("li", { class: "muted", text: "No promotion run." }));
  panel.append(list);

  // a decision made below shows in the list at once, as it does in the run's own phase line
  const decided = (r: RunInfo): void => {
    const text = items.get(r.run_id);
    if (text) text.textContent = rest({ ...r, parameters: runs.find((x) => x.run_id === r.run_id)?.parameters ?? r.parameters });
  };
  if (runId) await decision(panel, session, runId, decided);
  if (may(session, "admin")) await adminPanel(root, session);
}

const phaseText = (r: RunInfo): string => `Phase: ${r.phase}${r.waiting_gate ? `, waiting at the ${r.waiting_gate} gate` : ""}`;

async function decision(panel: HTMLElement, session: Session, runId: string, decided: (run: RunInfo) => void): Promise<void> {
  const say = status();
  const box = h("section", { class: "decision", "aria-labelledby": "dec-h" }, h("h3", { id: "dec-h", text: `Promotion run ${runId}` }), say);
  panel.append(box);
  let run: RunInfo;
  let report: PromotionReport | null = null;
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
  const refused = report?.verdict === "refused";
  if (report)
    box.append(
      h("p", { class: `verdict ${report.verdict}`, "data-verdict": report.verdict },
        h("strong", { text: `Policy verdict: ${report.verdict}.` }), ` ${report.summary}`),
    );
  const phase = h("p", { text: phaseText(run) });
  box.append(phase);
  const figure = h("figure", { class: "report-picture" });
  box.append(h("div", { class: "side-by-side" }, report ? comparison(report) : null, figure));
  blobUrl(`/runs/${encodeURIComponent(runId)}/report.png`)
    .then((src) =>
      figure.append(
        // full size in a tab of its own: its titles and legend are small in the page
        h("a", { href: src, target: "_blank", rel: "noopener" }, h("img", { src, alt: "Comparison of production and candidate predictions on the evaluation data" })),
        h("figcaption", {}, "Comparison picture (", h("a", { href: src, target: "_blank", rel: "noopener", text: "open it full size" }), ")"),
      ),
    )
    .catch(() => figure.append(h("figcaption", { class: "muted", text: "No comparison picture." })));

  const gate = run.tasks.find((t) => t.approval);
  if (gate?.approval) box.append(h("p", { text: `${gate.approval.decision === "refused" ? "Refused" : "Approved"} by ${gate.approval.approver}: ${gate.approval.reason}` }));
  if (!may(session, "decide")) {
    box.append(h("p", { class: "muted", text: `Your role (${session.who.role}) may not approve or refuse promotions.` }));
    return;
  }
  if (!run.waiting_gate) return;
  const reason = h("textarea", { name: "reason", rows: 2, "aria-required": "true" });
  const override = h("input", { type: "checkbox", name: "override", id: "override" });
  const approve = h("button", { type: "submit", class: "primary", text: "Approve" });
  const refuse = h("button", { type: "button", text: "Refuse" });
  const form = h("form", { "aria-label": "Decide the promotion" },
    field("Reason (recorded with the decision)", reason),
    refused ? h("div", { class: "field inline" }, override, h("label", { for: "override", text: "Override: approve although the policy refused" })) : null,
    h("div", { class: "actions" }, approve, refuse));
  box.append(form);
  const act = async (what: "approve" | "refuse"): Promise<void> => {
    if (!reason.value.trim()) {
      say.say("reason: give a reason for the decision", true);
      reason.focus();
      return;
    }
    if (what === "approve" && refused && !override.checked) {
      say.say("The policy refused this candidate: tick the override to approve it anyway", true);
      override.focus();
      return;
    }
    try {
      const done = what === "approve" ? await api.approve(runId, reason.value.trim(), override.checked) : await api.refuse(runId, reason.value.trim());
      say.say(`${what === "approve" ? "Approved" : "Refused"}: run ${runId} is ${done.phase}`);
      phase.textContent = phaseText(done);
      decided(done);
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
    // only a model with a previous version behind production can be rolled back
    const back = (await api.models({})).filter((m) => m.aliases.production && m.aliases.previous);
    for (const m of back) model.append(h("option", { value: m.id, text: `${m.id} (production ${m.aliases.production}, previous ${m.aliases.previous})` }));
    if (!back.length) say.say("No model has a previous version to roll back to.");
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
      const answer = await api.rollback(model.value, reason.value.trim());
      say.say(`Rolled back ${answer.model}: ${answer.summary}`);
    } catch (err) {
      say.say((err as Error).message, true);
    }
  });
  try {
    const records = await api.audit();
    audit.append(h("thead", {}, h("tr", {}, ...["When", "Who", "Role", "Action", "Target", "Status", "Detail"].map((t) => h("th", { scope: "col", text: t })))));
    const body = h("tbody");
    for (const r of records.slice(0, 100))
      body.append(h("tr", {}, ...[r.at.replace("T", " ").slice(0, 19), r.actor, r.role, r.action, r.target, String(r.status), r.detail].map((t) => h("td", { text: t }))));
    audit.append(body);
  } catch (err) {
    say.say(`audit: ${(err as Error).message}`, true);
  }
}
