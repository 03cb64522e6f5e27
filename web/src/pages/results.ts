// Results: the imagery's tiles with the predicted polygons (PMTiles vector tiles, read by HTTP
// range) coloured by class; a click on a polygon tells where it came from.
import maplibregl from "maplibre-gl";
import { FetchSource, PMTiles } from "pmtiles";
import { api, authHeaders, blobUrl, type Lineage, type ModelDetail, type RunInfo } from "../api";
import { h, link, status } from "../dom";
import { createMap, fitBbox, protocol, showImagery } from "../map";
import { classesOf, colourExpression } from "../model";
import type { Session } from "../session";

export const LAYER = "predictions-fill";

export async function resultsPage(root: HTMLElement, session: Session, runId?: string): Promise<void> {
  const say = status();
  if (!runId) {
    const list = h("ul", { class: "runs", "aria-label": "Batch inference runs" });
    root.append(h("section", { class: "panel wide", "aria-labelledby": "res-h" }, h("h2", { id: "res-h", text: "Results" }), say, list));
    try {
      const runs = (await api.runs()).filter((r) => r.pipeline === "batch-inference");
      if (!runs.length) say.say("No batch inference run yet.");
      for (const r of runs)
        list.append(h("li", {}, h("a", { href: `#/results/${encodeURIComponent(r.run_id)}`, text: `${r.run_id}` }), ` ${r.phase}, ${r.parameters.model ?? ""} ${r.parameters.model_version ?? ""}, started ${r.started ?? ""}`));
    } catch (err) {
      say.say((err as Error).message, true);
    }
    return;
  }
  const picked = h("div", { class: "picked", "aria-live": "polite", tabindex: -1 }, h("p", { class: "muted", text: "Click a polygon to see its class, area and lineage." }));
  const downloads = h("p", { class: "downloads" });
  const legend = h("ul", { class: "classes legend", "aria-label": "Classes" });
  const inView = h("p", { class: "in-view", "aria-live": "polite" });
  const mapBox = h("div", { class: "map" });
  root.append(
    h("div", { class: "split" },
      h("section", { class: "panel", "aria-labelledby": "res-h" },
        h("h2", { id: "res-h", text: `Results of run ${runId}` }), say, legend, inView, downloads,
        h("h3", { text: "Selected polygon" }), picked),
      h("section", { class: "mapcol", "aria-label": "Map of the predictions" }, mapBox),
    ),
  );
  let run: RunInfo;
  let lineage: Lineage = {};
  let detail: ModelDetail | null = null;
  try {
    run = await api.run(runId);
  } catch (err) {
    say.say((err as Error).message, true);
    return;
  }
  const [lin, det] = await Promise.allSettled([api.lineage(runId), api.model(run.parameters.model ?? "")]);
  // what the page cannot show is said, not left out silently
  const notes: string[] = [];
  if (lin.status === "fulfilled") lineage = lin.value;
  else notes.push(`lineage: ${(lin.reason as Error).message}`);
  if (det.status === "fulfilled") detail = det.value;
  const classes = detail ? classesOf(detail) : [];
  for (const c of classes)
    legend.append(h("li", {}, h("span", { class: "swatch", style: `background:${c.color ?? "#888"}`, "aria-hidden": "true" }), `${c.value} ${c.name}`));

  const map = await createMap(mapBox, session.config.basemap_url, "Map: imagery and predicted polygons; click a polygon for its lineage");
  const imagery = run.parameters.imagery;
  const tell = (): void => say.say(notes.join(" — "), true);
  if (imagery) {
    const tiles = `/imagery/tiles/{z}/{x}/{y}.png?path=${encodeURIComponent(imagery)}`;
    showImagery(map, `/api/v1${tiles}`);
    // one tile far from any imagery (answered at once): imagery the gateway may not read is
    // named once, and its failing tiles are taken off the map
    blobUrl(tiles.replace("{z}/{x}/{y}", "22/0/0"))
      .then(URL.revokeObjectURL)
      .catch((err: Error) => {
        showImagery(map, null);
        notes.push(`imagery: ${err.message}; the polygons are shown without it`);
        tell();
      });
  }
  if (notes.length) tell();
  const url = `${location.origin}/api/v1/runs/${encodeURIComponent(runId)}/predictions.pmtiles`;
  const archive = new PMTiles(new FetchSource(url, new Headers(authHeaders())));
  protocol.add(archive);
  let layerName = "predictions";
  let minZoom = 0;
  try {
    const header = await archive.getHeader();
    const metadata = (await archive.getMetadata()) as { vector_layers?: { id: string }[]; antimeridian_adjusted_bounds?: string };
    layerName = metadata?.vector_layers?.[0]?.id ?? layerName;
    // predictions across 180° (Fiji, Tonga, Samoa): the header's bounds span the world, the
    // adjusted ones (east past 180°) only the data
    const adjusted = (metadata?.antimeridian_adjusted_bounds ?? "").split(",").map(Number);
    const across = adjusted.length === 4 && adjusted.every(Number.isFinite);
    fitBbox(map, across ? adjusted : [header.minLon, header.minLat, header.maxLon, header.maxLat]);
    // the archive's coarsest level: above it there is nothing to draw
    minZoom = header.minZoom;
    if (map.getZoom() < header.minZoom) map.jumpTo({ zoom: header.minZoom });
  } catch (err) {
    say.say(`predictions: ${(err as Error).message}`, true);
    return;
  }
  map.addSource("predictions", { type: "vector", url: `pmtiles://${url}` });
  const colour = colourExpression(classes) as maplibregl.ExpressionSpecification;
  map.addLayer({ id: LAYER, type: "fill", source: "predictions", "source-layer": layerName, paint: { "fill-color": colour, "fill-opacity": 0.5 } });
  // a dark outline: a class drawn in white still shows over bright imagery
  map.addLayer({ id: "predictions-line", type: "line", source: "predictions", "source-layer": layerName, paint: { "line-color": "#7a0177", "line-width": 1 } });
  map.addLayer({ id: "predictions-selected", type: "line", source: "predictions", "source-layer": layerName, filter: ["==", ["get", "feature_id"], -2], paint: { "line-color": "#f5a524", "line-width": 3 } });

  // at the coarser zoom levels polygons too small to see are drawn as the squares of the cells
  // they fall in (feature_id -1, features: how many): counted by that number, each cell once
  const countInView = (): void => {
    // zoomed out past the archive's coarsest level, the map draws none of them
    const below = map.getZoom() < minZoom;
    inView.dataset.below = String(below);
    if (below) {
      inView.textContent = `Zoom in to see the polygons: they are drawn from zoom ${minZoom}.`;
      delete inView.dataset.count;
      return;
    }
    const ids = new Set<string>();
    const cells = new Map<string, number>();
    for (const f of map.queryRenderedFeatures({ layers: [LAYER] })) {
      const id = Number(f.properties.feature_id ?? f.id);
      if (id >= 0) ids.add(String(id));
      else if (f.geometry.type === "Polygon") cells.set(JSON.stringify(f.geometry.coordinates[0][0]), Number(f.properties.features ?? 1));
    }
    const grouped = [...cells.values()].reduce((a, b) => a + b, 0);
    const n = ids.size + grouped;
    inView.textContent = `${n} polygon${n === 1 ? "" : "s"} in view` + (grouped ? ` (${grouped} too small to draw one by one at this zoom, shown as cells)` : "");
    inView.dataset.count = String(n);
    inView.dataset.whole = String(ids.size);
    inView.dataset.grouped = String(grouped);
  };
  map.on("idle", countInView);

  map.on("mouseenter", LAYER, () => (map.getCanvas().style.cursor = "pointer"));
  map.on("mouseleave", LAYER, () => (map.getCanvas().style.cursor = ""));
  map.on("click", LAYER, (event) => {
    const feature = event.features?.[0];
    if (!feature) return;
    const p = feature.properties as Record<string, unknown>;
    const cls = classes.find((c) => c.value === Number(p.class));
    const area = Number(p.area);
    const cell = Number(p.feature_id) < 0;
    const rows: [string, string | Node][] = [
      ["Class", `${p.class} ${String(p.class_name ?? cls?.name ?? "")}`.trim() + (cell ? " (most of them)" : "")],
      ...(cell ? [["Polygons", `${p.features}, each too small to draw at this zoom: zoom in to pick one`] as [string, string]] : []),
      ["Area", (Number.isFinite(area) ? squareMetres(area) : String(p.area ?? "–")) + (cell ? " in all" : "")],
      ["Model", String(p.model ?? lineage.model ?? run.parameters.model ?? "–")],
      ["Version", String(p.model_version ?? lineage.model_version ?? run.parameters.model_version ?? "–")],
      ["MLflow run", lineage.mlflow_run_url ? link(lineage.mlflow_run_url, String(p.mlflow_run_id ?? lineage.mlflow_run_id)) : String(p.mlflow_run_id ?? lineage.mlflow_run_id ?? "–")],
      ["Dataset hash", String(lineage.dataset_hash ?? p.dataset_hash ?? "–")],
      ["Code commit", String(lineage.code_commit ?? p.code_commit ?? "–")],
      ...(cell ? [] : [
        ["Block", String(p.block_id ?? p.block ?? "–")],
        ["Feature", String(p.feature_id ?? feature.id ?? "–")],
      ] as [string, string][]),
    ];
    map.setFilter("predictions-selected", ["==", ["get", "feature_id"], cell ? -2 : Number(p.feature_id ?? -2)]);
    const dl = h("dl", { class: "lineage" });
    for (const [k, v] of rows) dl.append(h("dt", { text: k }), h("dd", { "data-field": k }, v));
    picked.replaceChildren(dl);
    picked.focus();
  });

  // downloads: fetched with the key, handed over as files
  const download = (format: string, name: string): HTMLButtonElement => {
    const b = h("button", { type: "button", text: `Download ${name}` });
    b.addEventListener("click", async () => {
      try {
        const href = await blobUrl(`/runs/${encodeURIComponent(runId)}/predictions?format=${format}`);
        const a = h("a", { href, download: `${runId}.${format === "geojson" ? "geojson" : "parquet"}` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(href), 10000);
      } catch (err) {
        say.say((err as Error).message, true);
      }
    });
    return b;
  };
  downloads.append(download("geoparquet", "GeoParquet"), " ", download("geojson", "GeoJSON"), " ", link(lineage.predictions_item_url ?? null, "The run's STAC item"), " ", link(lineage.model_item_url ?? null, "The model version's STAC item"));
}

/** An area as people read it: 1,234.5 m², and the hectares as well from one hectare up. */
export function squareMetres(area: number): string {
  const m2 = `${area.toLocaleString("en", { maximumFractionDigits: 1 })} m²`;
  return area >= 10000 ? `${m2} (${(area / 10000).toLocaleString("en", { maximumFractionDigits: 2 })} ha)` : m2;
}
