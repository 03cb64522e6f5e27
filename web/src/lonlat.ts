// Longitudes round the antimeridian: boxes with west > east (RFC 7946 5.2, STAC), shapes drawn
// on a map that goes on past ±180°, cut there into MultiPolygons (RFC 7946 3.1.9). No imports:
// the browser tests call these through window.geomlopsLonLat.

export type Bbox = [number, number, number, number];

/** W,S,E,N of a 4- or 6-number bbox, east past 180° where the box crosses the antimeridian
 * (west > east): the box MapLibre draws and fits. */
export function unwrapBbox(bbox: number[]): Bbox {
  const [w, s, e, n] = bbox.length >= 6 ? [bbox[0], bbox[1], bbox[3], bbox[4]] : bbox;
  return [w, s, e < w ? e + 360 : e, n];
}

/** Longitude ``x`` brought into [-180, 180) (a west edge), or into (-180, 180] with ``east``
 * (an east edge: 180° stays 180, not -180). */
export function wrapLon(x: number, east = false): number {
  const turns = east ? Math.ceil((x - 180) / 360) : Math.floor((x + 180) / 360);
  return x - 360 * turns;
}

/** West and east of parts each given as its own [west, east] (within [-180, 180]): across the
 * antimeridian (west > east) where the parts lie at both edges of the world and are closer
 * together once those wholly west of 0° move one turn east, as a MultiPolygon cut at 180°;
 * otherwise the plain extremes. */
export function lonRange(parts: [number, number][]): [number, number] {
  const plain: [number, number] = [Math.min(...parts.map((p) => p[0])), Math.max(...parts.map((p) => p[1]))];
  const moved = parts.map(([w, e]): [number, number] => (e <= 0 ? [w + 360, e + 360] : [w, e]));
  const across: [number, number] = [Math.min(...moved.map((p) => p[0])), Math.max(...moved.map((p) => p[1]))];
  const wide = plain[1] - plain[0];
  if (wide > 180 && across[1] - across[0] < wide) return [across[0], wrapLon(across[1], true)];
  return plain;
}

/** ``text`` typed as W,S,E,N (degrees; west > east: across 180°); throws naming what was
 * expected. A box across 180° wider than half the world is taken for west and east swapped. */
export function parseBox(text: string): Bbox {
  const values = text.split(",").map((v) => Number(v.trim()));
  const [w, s, e, n] = values;
  const lon = (x: number): boolean => x >= -180 && x <= 180;
  const got = `got "${text.trim()}"`;
  if (values.length !== 4 || values.some((v) => !Number.isFinite(v)) || !lon(w) || !lon(e) || s >= n || s < -90 || n > 90) {
    throw new Error(`area of interest: expected W,S,E,N in degrees, longitudes in [-180, 180], south < north; ${got}`);
  }
  const width = e > w ? e - w : e + 360 - w;
  if (width === 0 || (w > e && width > 180)) {
    throw new Error(
      `area of interest: west > east means a box across 180°, here ${width.toFixed(1)}° wide; west and east swapped? ${got}`,
    );
  }
  return [w, s, e, n];
}

/** The part of the closed ``ring`` on one side of the meridian ``x0`` (Sutherland-Hodgman; the
 * ring crosses ``x0`` at most twice), without the back-and-forth along ``x0`` that a stretch of
 * the ring lying on it leaves. */
function clipRing(ring: GeoJSON.Position[], x0: number, west: boolean): GeoJSON.Position[] {
  const inside = (p: GeoJSON.Position): boolean => (west ? p[0] <= x0 : p[0] >= x0);
  let out: GeoJSON.Position[] = [];
  const pts = ring.slice(0, -1);
  for (let i = 0; i < pts.length; i++) {
    const a = pts[i];
    const b = pts[(i + 1) % pts.length];
    if (inside(a)) out.push(a);
    if (inside(a) !== inside(b)) out.push([x0, a[1] + ((x0 - a[0]) * (b[1] - a[1])) / (b[0] - a[0])]);
  }
  // a point on x0 between two others on it is the turn of a spike along x0: dropped
  for (let again = true; again && out.length >= 3; ) {
    again = false;
    for (let i = 0; i < out.length; i++) {
      const prev = out[(i + out.length - 1) % out.length];
      const next = out[(i + 1) % out.length];
      if (out[i][0] === x0 && prev[0] === x0 && next[0] === x0) {
        out = out.filter((_, j) => j !== i);
        again = true;
        break;
      }
    }
  }
  const area = out.reduce((sum, p, i) => sum + p[0] * out[(i + 1) % out.length][1] - out[(i + 1) % out.length][0] * p[1], 0);
  return out.length >= 3 && area !== 0 ? [...out, out[0]] : [];
}

/** How often the closed ``ring`` goes from one side of the meridian ``x0`` to the other
 * (points on it do not count as a side). */
function crossings(ring: GeoJSON.Position[], x0: number): number {
  const sides = ring.slice(0, -1).map((p) => Math.sign(p[0] - x0)).filter((s) => s !== 0);
  return sides.filter((s, i) => s !== sides[(i + 1) % sides.length]).length;
}

/** A polygon drawn on the map as RFC 7946 wants it: where it reaches past ±180° (the map goes
 * on round the world) it is cut there into a MultiPolygon, each part within [-180, 180]. Throws,
 * naming what to do instead, for a shape wider than the world or whose outline crosses 180°
 * more than twice. */
export function cutAtAntimeridian(polygon: GeoJSON.Polygon): GeoJSON.Polygon | GeoJSON.MultiPolygon {
  const ring = polygon.coordinates[0];
  const xs = ring.map((p) => p[0]);
  const wide = Math.max(...xs) - Math.min(...xs);
  if (wide >= 360) throw new Error(`area of interest: ${wide.toFixed(1)}° wide, more than the world; draw a smaller one`);
  const shift = Math.floor((Math.min(...xs) + 180) / 360); // whole turns round the world
  const moved = ring.map((p) => [p[0] - 360 * shift, p[1]]);
  if (Math.max(...moved.map((p) => p[0])) <= 180) return { type: "Polygon", coordinates: [moved] };
  if (crossings(moved, 180) > 2) {
    throw new Error(
      "area of interest: its outline crosses 180° more than twice; draw a rectangle, or give a GeoJSON file cut at 180° into a MultiPolygon",
    );
  }
  const west = clipRing(moved, 180, true);
  const east = clipRing(moved, 180, false).map((p) => [p[0] - 360, p[1]]);
  const parts = [west, east].filter((r) => r.length).map((r) => [r]);
  return parts.length === 1 ? { type: "Polygon", coordinates: parts[0] } : { type: "MultiPolygon", coordinates: parts };
}
