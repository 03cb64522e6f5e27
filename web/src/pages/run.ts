// Run: a model version, imagery, an AOI (drawn or a GeoJSON file); plan, start, follow, cancel.
import { api, type BatchRequest, type Imagery, type ModelSummary, type RunInfo } from "../api";
import { duration, field, h, status } from "../dom";
import { lonRange } from "../lonlat";
import { bboxPolygon, createMap, showImagery, Drawing, drawingControls, fitBbox, formatBox, showOutline } from "../map";
import { may, type Session } from "../session";

const PATH = "__path__";

export function parseParameters(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [n, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`parameters, line ${n + 1}: expected NAME=VALUE, got ${JSON.stringify(line)}`);
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

export function aoiFromFile(text: string, name: string): GeoJSON.GeoJSON {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`${name}: not JSON (expected a GeoJSON Polygon, MultiPolygon, Feature or FeatureCollection)`);
  }
  const kind = (parsed as { type?: unknown })?.type;
  if (!["Polygon", "MultiPolygon", "Feature", "FeatureCollection"].includes(String(kind)))
    throw new Error(`${name}: GeoJSON type ${JSON.stringify(kind)}; expected Polygon, MultiPolygon, Feature or FeatureCollection`);
  return parsed as GeoJSON.GeoJSON;
}

function geojsonBbox(g: GeoJSON.GeoJSON): number[] | null {
  const parts: [number, number][] = []; // each polygon's own west and east
  const ys: number[] = [];
  const polygon = (rings: GeoJSON.Position[][]): void => {
    const xs = rings[0]?.map((p) => p[0]) ?? [];
    if (!xs.length) return;
    parts.push([Math.min(...xs), Math.max(...xs)]);
    for (const p of rings[0]) ys.push(p[1]);
  };
  const visit = (o: GeoJSON.GeoJSON | null): void => {
    if (!o) return;
    if (o.type === "FeatureCollection") o.features.forEach(visit);
    else if (o.type === "Feature") visit(o.geometry);
    else if (o.type === "Polygon") polygon(o.coordinates);
    else if (o.type === "MultiPolygon") o.coordinates.forEach(polygon);
  };
  visit(g);
  if (!parts.length) return null;
  const [w, e] = lonRange(parts); // a MultiPolygon cut at 180°: across it
  return [w, Math.min(...ys), e, Math.max(...ys)];
}

export async function runPage(root: HTMLElement, session: Session, runId?: string): Promise<void> {
  const say = status();
  const model = h("select", { name: "model", required: true });
  const version = h("select", { name: "version", required: true });
  const imagery = h("select", { name: "imagery", required: true });
  const path = h("input", { type: "text", name: "imagery-path", placeholder: "/data/scene.tif" });
  const pathField = field("Imagery path on the gateway's machine", path, "A GeoTIFF with the model's input bands");
  const file = h("input", { type: "file", name: "aoi-file", accept: ".geojson,.json,application/geo+json,application/json" });
  const params = h("textarea", { name: "parameters", rows: 3, placeholder: "block_size=160" });
  const planBtn = h("button", { type: "button", text: "Plan" });
  const startBtn = h("button", { type: "submit", text: "Start batch inference", class: "primary" });
  const planOut = h("p", { class: "plan", "aria-live": "polite" });
  const aoiOut = h("p", { class: "muted", "aria-live": "polite", text: "Area of interest: none (the whole imagery)" });
  const form = h(
    "form",
    { "aria-label": "Start a batch inference run" },
    field("Model", model),
    field("Version or alias", version),
    field("Imagery", imagery),
    pathField,
    field("Area of interest from a GeoJSON file", file, "Or draw it on the map, or drop a file on the map"),
    aoiOut,
    field("Further parameters", params, "NAME=VALUE, one per line"),
    h("div", { class: "actions" }, planBtn, may(session, "run") ? startBtn : h("p", { class: "muted", text: `Your role (${session.who.role}) may not start runs.` })),
    planOut,
  );
  const progress = h("progress", { max: 1, value: 0, "aria-label": "Blocks done" });
  const progressText = h("p", { class: "progress-text", "aria-live": "polite" });
  const logs = h("pre", { class: "logs", tabindex: 0, "aria-label": "Log tail" });
  const cancel = h("button", { type: "button", text: "Cancel run" });
  const resultsLink = h("p");
  const follow = h(
    "section",
    { class: "follow", "aria-labelledby": "follow-h", hidden: true },
    h("h3", { id: "follow-h", text: "Progress" }),
    progress,
    progressText,
    may(session, "run") ? cancel : null,
    resultsLink,
    h("h4", { text: "Log tail" }),
    logs,
  );
  const mapBox = h("div", { class: "map" });
  root.append(
    h("div", { class: "split" },
      h("section", { class: "panel", "aria-labelledby": "run-h" }, h("h2", { id: "run-h", text: "Run a model" }), form, say, follow),
      h("section", { class: "mapcol", "aria-label": "Map: the area of interest" }, mapBox),
    ),
  );
  const map = await createMap(mapBox, session.config.basemap_url, "Map: draw the area of interest");
  const drawing = new Drawing(map);
  mapBox.before(drawingControls(drawing, "area of interest"));
  let fileAoi: GeoJSON.GeoJSON | null = null;
  const aoi = (): GeoJSON.GeoJSON | null => drawing.area() ?? fileAoi;
  const describeAoi = (): void => {
    const box = drawing.shape() ? drawing.bbox() : fileAoi ? geojsonBbox(fileAoi) : null;
    aoiOut.textContent = box
      ? `Area of interest: ${drawing.shape() ? (drawing.wasTyped ? "typed" : "drawn") : "from the file"}, ${formatBox(box)}`
      : "Area of interest: none (the whole imagery)";
    planOut.textContent = "";
  };
  drawing.onChange(() => {
    if (drawing.shape()) {
      fileAoi = null;
      showOutline(map, "aoi-file", null);
    }
    describeAoi();
  });
  const readFile = async (f: File): Promise<void> => {
    try {
      fileAoi = aoiFromFile(await f.text(), f.name);
      drawing.clear();
      showOutline(map, "aoi-file", fileAoi, "#1f6feb");
      fitBbox(map, geojsonBbox(fileAoi));
      describeAoi();
      say.say(`Area of interest read from ${f.name}`);
    } catch (err) {
      say.say((err as Error).message, true);
    }
  };
  file.addEventListener("change", () => {
    if (file.files?.[0]) void readFile(file.files[0]);
  });
  mapBox.addEventListener("dragover", (e) => e.preventDefault());
  mapBox.addEventListener("drop", (e) => {
    e.preventDefault();
    const f = e.dataTransfer?.files[0];
    if (f) void readFile(f);
  });

  // choices
  let models: ModelSummary[] = [];
  let images: Imagery[] = [];
  try {
    models = await api.models({});
  } catch (err) {
    say.say((err as Error).message, true);
  }
  try {
    images = await api.imagery();
  } catch {
    images = [];
  }
  for (const m of models) model.append(h("option", { value: m.id, text: m.title ? `${m.title} (${m.id})` : m.id }));
  const fillVersions = (): void => {
    const m = models.find((x) => x.id === model.value);
    version.replaceChildren();
    for (const [alias, v] of Object.entries(m?.aliases ?? {})) version.append(h("option", { value: `alias:${alias}`, text: `${alias} (version ${v})` }));
    for (const v of [...(m?.versions ?? [])].reverse()) version.append(h("option", { value: `version:${v}`, text: `version ${v}` }));
  };
  for (const i of images) imagery.append(h("option", { value: i.id, text: i.title ? `${i.title}` : i.id }));
  imagery.append(h("option", { value: PATH, text: "A path on the gateway's machine…" }));
  const byPath = (where: string): string => `/api/v1/imagery/tiles/{z}/{x}/{y}.png?path=${encodeURIComponent(where)}`;
  const imageryChanged = (): void => {
    pathField.hidden = imagery.value !== PATH;
    const chosen = images.find((i) => i.id === imagery.value);
    const typed = imagery.value === PATH && path.value.trim() ? byPath(path.value.trim()) : null;
    showImagery(map, chosen ? `/api/v1/imagery/${encodeURIComponent(chosen.id)}/tiles/{z}/{x}/{y}.png` : typed);
    if (chosen?.bbox) fitBbox(map, chosen.bbox);
    planOut.textContent = "";
  };
  imagery.addEventListener("change", imageryChanged);
  path.addEventListener("change", imageryChanged); // a typed path: its tiles (Plan fits the map to it)

  // imagery with another number of bands than the model reads is offered, disabled, saying so
  const fitImagery = async (): Promise<void> => {
    let wanted: string[] = [];
    try {
      wanted = (await api.model(model.value)).reads ?? [];
    } catch {
      wanted = []; // the form still works: the plan names a mismatch
    }
    const reads = wanted.length;
    for (const option of [...imagery.options]) {
      const image = images.find((i) => i.id === option.value);
      if (!image) continue; // a path: checked when planned
      const bands = Array.isArray(image.bands) ? image.bands : [];
      const count = bands.length;
      // as the run reads it: by band name where the imagery names every band the model reads, else by count
      const named = reads > 0 && wanted.every((b) => bands.includes(b));
      const misfit = reads > 0 && count > 0 && !named && count !== reads;
      option.disabled = misfit;
      option.textContent = (image.title || image.id) + (misfit ? ` — ${count} band${count === 1 ? "" : "s"}; the model reads ${reads}` : "");
    }
    if (imagery.selectedOptions[0]?.disabled) {
      const fits = [...imagery.options].find((o) => !o.disabled);
      if (fits) imagery.value = fits.value;
    }
    imageryChanged();
  };
  model.addEventListener("change", () => {
    fillVersions();
    void fitImagery();
  });
  fillVersions();
  await fitImagery();

  // registered imagery by its address or path, as a run's parameters keep it
  const registeredAt = (where: string): Imagery | undefined => images.find((i) => i.href === where || i.path === where);

  // the form starts from a run's choices; known: its imagery, where registered
  const prefill = async (run: RunInfo, known: Imagery | undefined): Promise<void> => {
    const given = run.parameters;
    if (!models.some((m) => m.id === given.model)) return;
    model.value = String(given.model);
    fillVersions();
    await fitImagery(); // the imagery offered as this model reads it
    // the gateway keeps a run's alias, or its version, as model_version
    const chosen = String(given.model_version ?? "");
    const wanted = [`alias:${chosen}`, `version:${chosen}`].find((v) => [...version.options].some((o) => o.value === v));
    if (wanted) version.value = wanted;
    imagery.value = known ? known.id : PATH;
    if (!known) path.value = given.imagery ?? "";
    pathField.hidden = imagery.value !== PATH;
  };

  const request = (): BatchRequest => {
    const chosen = images.find((i) => i.id === imagery.value);
    const where = imagery.value === PATH ? path.value.trim() : String(chosen?.href ?? chosen?.path ?? chosen?.id ?? "");
    if (!where) throw new Error("imagery: choose registered imagery or give a path");
    const [kind, value] = version.value.split(/:(.*)/s);
    if (!model.value || !value) throw new Error("model, version: choose a model and a version or alias");
    const body: BatchRequest = { model: model.value, imagery: where, parameters: parseParameters(params.value) };
    if (kind === "alias") body.alias = value;
    else body.version = value;
    drawing.useTyped(); // a typed box not drawn yet, or malformed: drawn, or refused by name
    const area = aoi();
    if (area) body.aoi = area;
    return body;
  };
  planBtn.addEventListener("click", async () => {
    try {
      const plan = await api.plan(request());
      const blocks = plan.blocks;
      const notes = plan.notes.map(sentence).join(" ");
      planOut.textContent = `The plan covers ${blocks} block${blocks === 1 ? "" : "s"} of ${plan.block_size} px in ${plan.groups} task${plan.groups === 1 ? "" : "s"}.${notes ? ` ${notes}` : ""}`;
      planOut.dataset.blocks = String(blocks);
      say.say(""); // an earlier refusal no longer stands
      if (plan.bbox) {
        showOutline(map, "plan", bboxPolygon(plan.bbox), "#6f42c1");
        fitBbox(map, plan.bbox); // where the planned blocks are (imagery given by path included)
      }
    } catch (err) {
      say.say((err as Error).message, true);
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const run = await api.start(request());
      location.hash = `#/run/${encodeURIComponent(run.run_id)}`;
    } catch (err) {
      say.say((err as Error).message, true);
    }
  });

  if (runId) {
    // the run's imagery on the map while it runs
    try {
      const run = await api.run(runId);
      const where = run.parameters.imagery ?? "";
      // the form below is for a new run: say which area this one covers
      const box = run.aoi_bbox;
      aoiOut.textContent = box
        ? `Area of interest of run ${runId}: ${formatBox(box)}`
        : `Area of interest of run ${runId}: ${run.parameters.aoi ? "given as a file" : "none (the whole imagery)"}`;
      if (box) showOutline(map, "aoi-file", bboxPolygon(box), "#1f6feb");
      const known = registeredAt(where);
      showImagery(map, where ? byPath(where) : null);
      if (known?.bbox) fitBbox(map, known.bbox);
      else if (box) fitBbox(map, box); // imagery given by path: the run's area of interest
      // the form starts from this run's choices, for the next run with one thing changed
      await prefill(run, known);
    } catch {
      // followRun says why
    }
    await followRun(runId, { follow, progress, progressText, logs, cancel, resultsLink, say });
  }
}

interface FollowParts {
  follow: HTMLElement;
  progress: HTMLProgressElement;
  progressText: HTMLElement;
  logs: HTMLElement;
  cancel: HTMLButtonElement;
  resultsLink: HTMLElement;
  say: ReturnType<typeof status>;
}

const DONE = ["Succeeded", "Failed", "Error", "Interrupted"];

/** A note as a sentence: a capital first, a full stop last. */
export function sentence(note: string): string {
  const text = note.trim();
  if (!text) return text;
  const capital = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

export function blocksOf(run: RunInfo): [number, number] {
  if (run.blocks) return [run.blocks.done, run.blocks.total];
  const [done, total] = run.progress.split("/").map(Number);
  return [done || 0, total || 0];
}

async function followRun(runId: string, p: FollowParts): Promise<void> {
  p.follow.hidden = false;
  p.cancel.addEventListener("click", async () => {
    try {
      await api.stop(runId);
      p.say.say(`Run ${runId} stopped`);
    } catch (err) {
      p.say.say((err as Error).message, true);
    }
  });
  const page = location.hash;
  const tick = async (): Promise<void> => {
    if (location.hash !== page) return; // left the page
    let run: RunInfo;
    try {
      run = await api.run(runId);
    } catch (err) {
      p.say.say((err as Error).message, true);
      return;
    }
    const [done, total] = blocksOf(run);
    p.progress.max = Math.max(total, 1);
    p.progress.value = done;
    const unit = run.blocks?.unit ?? "tasks";
    p.progress.setAttribute("aria-valuetext", `${done} of ${total} ${unit}`);
    // no total yet: the run is still planning its blocks
    const counted = total || DONE.includes(run.phase) ? `${done} / ${total} ${unit}` : `planning its ${unit}`;
    p.progressText.textContent = `Run ${runId}: ${run.phase}, ${counted}, elapsed ${duration(run.blocks?.elapsed_s)}, ETA ${DONE.includes(run.phase) || !total ? "–" : duration(run.blocks?.eta_s)}`;
    p.progressText.dataset.done = String(done);
    p.progressText.dataset.total = String(total);
    p.progressText.dataset.phase = run.phase;
    try {
      const text = await api.logs(runId);
      p.logs.textContent = String(text).split("\n").slice(-30).join("\n");
    } catch {
      // no logs yet
    }
    if (DONE.includes(run.phase)) {
      p.cancel.disabled = true;
      if (run.phase === "Succeeded")
        p.resultsLink.replaceChildren(h("a", { href: `#/results/${encodeURIComponent(runId)}`, text: "See the results on the map" }));
      else p.say.say(`Run ${run.phase}: ${run.message}`, true);
      return;
    }
    setTimeout(() => void tick(), 1000);
  };
  await tick();
}

