// What the app reads of a model: its classes and colours, input bands, links.
import type { ModelClass, ModelDetail, VersionDetail } from "./api";

const PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"];

type Props = Record<string, unknown>;

function props(detail: ModelDetail): Props {
  return (detail.item?.properties ?? {}) as Props;
}

function firstOf(value: unknown): Props {
  return (Array.isArray(value) ? value[0] : value) as Props;
}

export function classesOf(detail: ModelDetail): ModelClass[] {
  if (detail.classes && detail.classes.length)
    return detail.classes.map((c, i) => ({ ...c, color: c.color || PALETTE[i % PALETTE.length] }));
  const output = firstOf(props(detail)["mlm:output"]) ?? {};
  const raw = (output["classification:classes"] ?? []) as Props[];
  return raw.map((c, i) => {
    const hint = (c.color_hint ?? c.color ?? "") as string;
    return {
      value: Number(c.value ?? i),
      name: String(c.name ?? c.title ?? c.value),
      color: hint ? (hint.startsWith("#") ? hint : `#${hint}`) : PALETTE[i % PALETTE.length],
    };
  });
}

export function bandsOf(detail: ModelDetail): string[] {
  if (detail.bands && detail.bands.length)
    return detail.bands.map((b) => (b.common_name && b.common_name !== b.name ? `${b.name} (${b.common_name})` : b.name));
  const input = firstOf(props(detail)["mlm:input"]) ?? {};
  const bands = (input.bands ?? []) as (string | Props)[];
  return bands.map((b) => (typeof b === "string" ? b : String(b.name ?? "")));
}

export function itemLink(version: VersionDetail): string | null {
  if (version.item_url) return version.item_url;
  const self = version.item?.links?.find((l) => l.rel === "self");
  return self?.href ?? null;
}

/** MapLibre colour expression: the feature's ``class`` value to its class colour. */
export function colourExpression(classes: ModelClass[]): unknown {
  if (!classes.length) return "#d95f02";
  const match: unknown[] = ["match", ["to-number", ["get", "class"]]];
  for (const c of classes) match.push(c.value, c.color ?? "#888888");
  match.push("#888888");
  return match;
}
