// The map: MapLibre with a bundled blank style (a background colour, no glyphs, no sprite), an
// optional raster basemap from the gateway's config, and the PMTiles protocol for predictions.
import maplibregl from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import { Protocol } from "pmtiles";
import { TerraDraw, TerraDrawPolygonMode, TerraDrawRectangleMode, TerraDrawRenderMode } from "terra-draw";
import { TerraDrawMapLibreGLAdapter } from "terra-draw-maplibre-gl-adapter";
import { authHeaders } from "./api";
import { type Bbox, cutAtAntimeridian, parseBox, unwrapBbox, wrapLon } from "./lonlat";

export type { Bbox };

export const protocol = new Protocol({ metadata: true });
maplibregl.addProtocol("pmtiles", protocol.tile);

declare global {
  interface Window {
    /** The map on the page now (the browser tests read its rendered features). */
    geomlopsMap?: maplibregl.Map;
  }
}

export function blankStyle(basemap: string | null): maplibregl.StyleSpecification {
  const style: maplibregl.StyleSpecification = {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#e8ecef" } }],
  };
  if (basemap) {
    style.sources.basemap = { type: "raster", tiles: [basemap], tileSize: 256 };
    style.layers.push({ id: "basemap", type: "raster", source: "basemap" });
  }
  return style;
}

export function createMap(
  container: HTMLElement,
  basemap: string | null,
  label: string,
): Promise<maplibregl.Map> {
  container.setAttribute("role", "application");
  container.setAttribute("aria-label", label);
  const map = new maplibregl.Map({
    container,
    style: blankStyle(basemap),
    center: [0, 20],
    zoom: 1,
    attributionControl: false,
    // the gateway's imagery tiles need the key; no other host is ever sent it
    transformRequest: (url) =>
      url.startsWith(`${location.origin}/api/v1/`) ? { url, headers: authHeaders() } : { url },
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl({}), "bottom-left");
  window.geomlopsMap = map;
  return new Promise((resolve) => map.once("load", () => resolve(map)));
}

export function fitBbox(map: maplibregl.Map, bbox: number[] | null | undefined, padding = 30): void {
  if (!bbox || bbox.length < 4) return;
  const [w, s, e, n] = unwrapBbox(bbox);
  map.fitBounds(
    [
      [w, s],
      [e, n],
    ],
    { padding, animate: false, maxZoom: 17 },
  );
}

export function bboxPolygon(bbox: number[]): GeoJSON.Feature<GeoJSON.Polygon> {
  const [w, s, e, n] = unwrapBbox(bbox);
  return {
    type: "Feature",
    properties: {},
    geometry: {
      type: "Polygon",
      coordinates: [
        [
          [w, s],
          [e, s],
          [e, n],
          [w, n],
          [w, s],
        ],
      ],
    },
  };
}

/** Show imagery tiles (a gateway route with {z}/{x}/{y}) under everything else; null: none. */
export function showImagery(map: maplibregl.Map, route: string | null): void {
  if (map.getLayer("imagery")) map.removeLayer("imagery");
  if (map.getSource("imagery")) map.removeSource("imagery");
  if (!route) return;
  map.addSource("imagery", { type: "raster", tiles: [`${location.origin}${route}`], tileSize: 256 });
  const above = map.getStyle().layers.find((l) => l.id !== "background" && l.id !== "basemap");
  map.addLayer({ id: "imagery", type: "raster", source: "imagery" }, above?.id);
}

/** Show ``geojson`` as an outline (a model's extent, an AOI read from a file). */
export function showOutline(
  map: maplibregl.Map,
  id: string,
  geojson: GeoJSON.GeoJSON | null,
  color = "#b3261e",
): void {
  const data = geojson ?? { type: "FeatureCollection", features: [] };
  const source = map.getSource(id) as maplibregl.GeoJSONSource | undefined;
  if (source) {
    source.setData(data);
    return;
  }
  map.addSource(id, { type: "geojson", data });
  map.addLayer({ id: `${id}-fill`, type: "fill", source: id, paint: { "fill-color": color, "fill-opacity": 0.08 } });
  map.addLayer({ id: `${id}-line`, type: "line", source: id, paint: { "line-color": color, "line-width": 2 } });
}

/** ``bbox`` as the W,S,E,N text the app shows (four decimals of a degree). */
export function formatBox(bbox: number[]): string {
  return bbox.map((v) => v.toFixed(4)).join(", ");
}

/** Polygon and rectangle drawing (terra-draw); the last finished shape is the one used. */
export class Drawing {
  readonly draw: TerraDraw;
  private listeners: ((shape: GeoJSON.Polygon | null) => void)[] = [];
  /** A box typed as W,S,E,N and not drawn yet ("" when none waits). */
  typed = "";
  /** A typed box across 180°, shown as an outline: terra-draw holds longitudes within ±180. */
  private across: GeoJSON.Polygon | null = null;
  /** Whether the shape there came from a typed box (else drawn with the mouse, or none). */
  wasTyped = false;

  constructor(private readonly map: maplibregl.Map) {
    this.draw = new TerraDraw({
      adapter: new TerraDrawMapLibreGLAdapter({ map }),
      modes: [new TerraDrawRectangleMode(), new TerraDrawPolygonMode(), new TerraDrawRenderMode({ modeName: "idle", styles: {} })],
    });
    this.draw.start();
    this.draw.setMode("idle");
    this.draw.on("finish", (id) => {
      for (const feature of this.draw.getSnapshot()) {
        if (feature.id !== id) this.draw.removeFeatures([feature.id as string]);
      }
      this.draw.setMode("idle");
      this.typed = ""; // drawn after typing: the drawing wins
      this.wasTyped = false;
      this.hold(null);
      this.emit();
    });
  }

  private hold(box: GeoJSON.Polygon | null): void {
    this.across = box;
    showOutline(this.map, "typed-box", box, "#1f6feb");
  }

  onChange(listener: (shape: GeoJSON.Polygon | null) => void): void {
    this.listeners.push(listener);
  }

  private emit(): void {
    const shape = this.shape();
    for (const listener of this.listeners) listener(shape);
  }

  mode(name: "rectangle" | "polygon" | "idle"): void {
    this.draw.setMode(name);
  }

  shape(): GeoJSON.Polygon | null {
    if (this.across) return this.across;
    const found = this.draw.getSnapshot().find((f) => f.geometry.type === "Polygon");
    return found ? (found.geometry as GeoJSON.Polygon) : null;
  }

  clear(): void {
    this.draw.clear();
    this.wasTyped = false;
    this.hold(null);
    this.emit();
  }

  /** Put a rectangle over ``bbox`` (W,S,E,N; west > east: across 180°): the keyboard's way to
   * draw. Throws naming why if it cannot, and then the shape there before stays. */
  setBox(bbox: Bbox): void {
    const polygon = bboxPolygon(bbox).geometry;
    if (bbox[0] > bbox[2]) {
      this.draw.clear();
      this.hold(polygon);
    } else {
      const before = this.draw.getSnapshot().map((f) => f.id as string);
      const [result] = this.draw.addFeatures([{ type: "Feature", geometry: polygon, properties: { mode: "rectangle" } }]);
      if (!result?.valid) throw new Error(`box: ${result?.reason ?? "not a rectangle"}`);
      if (before.length) this.draw.removeFeatures(before);
      this.hold(null);
    }
    this.wasTyped = true;
    this.emit();
  }

  /** Draw the typed box, if one waits: a run never starts on the whole imagery because the box
   * typed for it was malformed or not applied. Throws naming what was expected (the box stays
   * typed, and waits). */
  useTyped(): void {
    if (!this.typed.trim()) return;
    const box = parseBox(this.typed);
    const text = this.typed;
    this.typed = ""; // before the box is drawn: the typed field empties with it
    try {
      this.setBox(box);
    } catch (err) {
      this.typed = text;
      throw err;
    }
  }

  /** The drawn shape as an area of interest (RFC 7946: cut at the antimeridian if it crosses). */
  area(): GeoJSON.Polygon | GeoJSON.MultiPolygon | null {
    const shape = this.shape();
    return shape ? cutAtAntimeridian(shape) : null;
  }

  /** A drawn rectangle or polygon as W,S,E,N in [-180, 180] (west > east: across 180°). */
  bbox(): Bbox | null {
    const shape = this.shape();
    if (!shape) return null;
    const xs = shape.coordinates[0].map((c) => c[0]);
    const ys = shape.coordinates[0].map((c) => c[1]);
    const [w, e] = [Math.min(...xs), Math.max(...xs)];
    const [s, n] = [Math.min(...ys), Math.max(...ys)];
    return e - w >= 360 ? [-180, s, 180, n] : [wrapLon(w), s, wrapLon(e, true), n];
  }
}

/** Buttons that pick the drawing mode, with labels a screen reader reads. */
export function drawingControls(drawing: Drawing, what: string): HTMLElement {
  const box = document.createElement("div");
  box.className = "toolbar";
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", `Draw ${what}`);
  const button = (text: string, label: string, action: () => void): void => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    // the accessible name starts with the visible text (so "Use box" can be said or searched), then says more
    b.setAttribute("aria-label", `${text}: ${label.charAt(0).toLowerCase()}${label.slice(1)}`);
    b.title = label;
    b.addEventListener("click", action);
    box.append(b);
  };
  button("Rectangle", `Draw ${what} as a rectangle (click two corners)`, () => drawing.mode("rectangle"));
  button("Polygon", `Draw ${what} as a polygon (click each corner, click the first to close)`, () =>
    drawing.mode("polygon"),
  );
  button("Clear", `Clear the drawn ${what}`, () => {
    drawing.typed = "";
    drawing.clear();
  });
  // the keyboard's way: type the box's corners
  const input = document.createElement("input");
  input.type = "text";
  input.placeholder = "W,S,E,N";
  input.size = 22;
  input.setAttribute("aria-label", `Or type the ${what} as west, south, east, north (degrees)`);
  const say = document.createElement("span");
  say.setAttribute("role", "status");
  say.className = "muted";
  const apply = (): void => {
    try {
      drawing.useTyped();
      say.textContent = "";
    } catch (err) {
      say.textContent = (err as Error).message;
    }
  };
  input.addEventListener("input", () => {
    drawing.typed = input.value;
  });
  drawing.onChange(() => {
    input.value = drawing.typed; // emptied once the box is drawn, or a shape drawn instead
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      apply();
    }
  });
  box.append(input);
  button("Use box", `Use the typed ${what}`, apply);
  box.append(say);
  return box;
}
