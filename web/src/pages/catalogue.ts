// Catalogue: search models by text, task and a box drawn on the map; a card per model.
import { api, type ModelDetail } from "../api";
import { field, h, link, select, status } from "../dom";
import { bboxPolygon, createMap, Drawing, drawingControls, fitBbox, showOutline } from "../map";
import { bandsOf, classesOf, itemLink } from "../model";
import type { Session } from "../session";


export async function cataloguePage(root: HTMLElement, session: Session): Promise<void> {
  const q = h("input", { type: "search", name: "q", placeholder: "cloud, buildings…" });
  // the tasks offered are those of the catalogued models (filled by the first search, of all)
  const task = select([["", "any task"]], { name: "task" });
  const useBox = h("input", { type: "checkbox", name: "use-box" });
  const form = h(
    "form",
    { class: "search", role: "search", "aria-label": "Search models" },
    field("Text", q),
    field("Task", task),
    h("div", { class: "field inline" }, useBox, h("label", { for: (useBox.id = "use-box"), text: "Only models over the drawn box" })),
    h("button", { type: "submit", text: "Search" }),
  );
  const say = status();
  const results = h("ul", { class: "cards", "aria-label": "Models found" });
  const mapBox = h("div", { class: "map" });
  root.append(
    h("div", { class: "split" },
      h("section", { class: "panel", "aria-labelledby": "cat-h" }, h("h2", { id: "cat-h", text: "Model catalogue" }), form, say, results),
      h("section", { class: "mapcol", "aria-label": "Map of model extents" }, mapBox),
    ),
  );
  const map = await createMap(mapBox, session.config.basemap_url, "Map: model extents; draw a box to search within it");
  const drawing = new Drawing(map);
  mapBox.before(drawingControls(drawing, "search box"));
  drawing.onChange((shape) => {
    useBox.checked = shape !== null;
  });

  let first = true;
  const search = async (): Promise<void> => {
    const params: Record<string, string> = {};
    if (q.value.trim()) params.q = q.value.trim();
    if (task.value) params.task = task.value;
    const box = drawing.bbox();
    if (useBox.checked && box) params.bbox = box.map((v) => v.toFixed(5)).join(",");
    say.say("Searching…");
    try {
      const found = await api.models(params);
      results.replaceChildren();
      say.say(`${found.length} model${found.length === 1 ? "" : "s"} found`);
      const details = await Promise.all(found.map((m) => api.model(m.id)));
      for (const detail of details) results.append(card(detail, () => showExtent(detail)));
      if (first) {
        first = false;
        for (const t of [...new Set(details.flatMap((d) => d.tasks))].sort()) task.append(h("option", { value: t, text: t }));
        fitBbox(map, unionBbox(details.map((d) => d.bbox)));
      }
      showOutline(map, "extents", {
        type: "FeatureCollection",
        features: details
          .filter((d) => d.geometry || d.bbox)
          .map((d) => (d.geometry ? { type: "Feature" as const, properties: {}, geometry: d.geometry } : bboxPolygon(d.bbox as number[]))),
      });
    } catch (err) {
      say.say(String((err as Error).message), true);
    }
  };
  const showExtent = (detail: ModelDetail): void => {
    const extent = detail.geometry ? { type: "Feature" as const, properties: {}, geometry: detail.geometry } : null;
    showOutline(map, "extents", extent ?? (detail.bbox ? bboxPolygon(detail.bbox) : null));
    fitBbox(map, detail.bbox);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void search();
  });
  await search();
}

/** The box holding every box given (null: none; boxes across the antimeridian are left out). */
function unionBbox(boxes: (number[] | null | undefined)[]): number[] | null {
  const plain = boxes.filter((b): b is number[] => !!b && b.length >= 4 && b[0] <= b[2]);
  if (!plain.length) return null;
  return [Math.min(...plain.map((b) => b[0])), Math.min(...plain.map((b) => b[1])), Math.max(...plain.map((b) => b[2])), Math.max(...plain.map((b) => b[3]))];
}

function card(detail: ModelDetail, showExtent: () => void): HTMLElement {
  const classes = classesOf(detail);
  const bands = bandsOf(detail);
  const production = detail.production ?? detail.aliases.production ?? null;
  const previous = detail.previous ?? detail.aliases.previous ?? null;
  const headingId = `model-${detail.id}`;
  const versions = h(
    "table",
    { class: "versions" },
    h("caption", { text: `Versions of ${detail.id}` }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Version" }), h("th", { scope: "col", text: "Aliases" }), h("th", { scope: "col", text: "Metrics" }), h("th", { scope: "col", text: "Links" }))),
  );
  const body = h("tbody");
  for (const v of [...detail.version_details].reverse()) {
    // the held-out test metrics first, then the others
    const metrics = Object.entries(v.metrics ?? {})
      .filter(([k]) => !k.includes("/") && !k.includes("n_") && !k.includes("seconds"))
      .sort(([a], [b]) => Number(!a.startsWith("test_")) - Number(!b.startsWith("test_")) || a.localeCompare(b))
      .slice(0, 8)
      .map(([k, value]) => `${k} ${Number(value).toFixed(3)}`)
      .join(", ");
    body.append(
      h("tr", {},
        h("th", { scope: "row", text: v.version }),
        h("td", { text: (v.aliases ?? []).join(", ") || "–" }),
        h("td", { class: "metrics", text: metrics || "–" }),
        h("td", {}, link(v.mlflow_run_url ?? null, `MLflow run ${String(v.run_id ?? "").slice(0, 8)}`), " ", " ", link(itemLink(v), "STAC item")),
      ),
    );
  }
  versions.append(body);
  const show = h("button", { type: "button", text: "Show extent on map", "aria-label": `Show extent on map: ${detail.id}` });
  show.addEventListener("click", showExtent);
  return h(
    "li",
    { class: "card", "aria-labelledby": headingId, "data-model": detail.id },
    h("h3", { id: headingId, text: detail.title ? `${detail.title} (${detail.id})` : detail.id }),
    h("p", { text: detail.description }),
    h("dl", {},
      h("dt", { text: "Tasks" }), h("dd", { text: detail.tasks.join(", ") || "–" }),
      h("dt", { text: "Framework" }), h("dd", { text: detail.framework || "–" }),
      h("dt", { text: "Input bands" }), h("dd", { text: bands.join(", ") || "–" }),
      h("dt", { text: "Production" }), h("dd", { text: production ? `version ${production}` : "none" }),
      h("dt", { text: "Previous" }), h("dd", { text: previous ? `version ${previous}` : "none" }),
      h("dt", { text: "Classes" }),
      h("dd", {}, h("ul", { class: "classes" }, ...classes.map((c) => h("li", {}, h("span", { class: "swatch", style: `background:${c.color ?? "#888"}`, "aria-hidden": "true" }), `${c.value} ${c.name}`)))),
    ),
    versions,
    h("p", {}, link(detail.item_url ?? null, "STAC item of the model"), " ", show),
  );
}
