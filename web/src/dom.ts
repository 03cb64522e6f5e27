// Small DOM helpers: elements with attributes, labelled form controls, status messages.
import { authHeaders } from "./api";

type Attrs = Record<string, string | boolean | number | undefined | null>;
type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = String(value);
    else if (name === "text") el.textContent = String(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

let counter = 0;
export function uid(prefix: string): string {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** A label and its control, tied by id. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id || uid("f");
  control.id = id;
  const parts: Child[] = [h("label", { for: id, text: label }), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "hint", text: hint }));
  }
  return h("div", { class: "field" }, ...parts);
}

export function select(options: [string, string][], attrs: Attrs = {}): HTMLSelectElement {
  const el = h("select", attrs);
  for (const [value, text] of options) el.append(h("option", { value, text }));
  return el;
}

/** A live region for messages (errors in red, read out by screen readers). */
export function status(): HTMLElement & { say: (text: string, error?: boolean) => void } {
  const el = h("p", { class: "status", role: "status", "aria-live": "polite" }) as unknown as HTMLElement & {
    say: (text: string, error?: boolean) => void;
  };
  el.say = (text: string, error = false) => {
    el.textContent = text;
    el.classList.toggle("error", error);
  };
  return el;
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return m ? `${m} min ${s % 60} s` : `${s} s`;
}

export function link(href: string | null | undefined, text: string): HTMLElement {
  if (!href) return h("span", { text });
  if (href.startsWith("/api/v1/")) return keyedLink(href, text);
  const external = /^https?:/.test(href);
  return h("a", { href, text, target: external ? "_blank" : undefined, rel: external ? "noopener" : undefined });
}

/** A link to one of the gateway's own resources (a STAC item, with no STAC API in front of the
 * catalogue): a plain link would be sent without the key and refused, so it is fetched with the
 * key and shown in a new tab, as JSON or plain text only (never run as a page of the app's
 * origin, where the key is kept). Opened otherwise (middle click), the link gets the 401. */
function keyedLink(href: string, text: string): HTMLElement {
  const a = h("a", { href, text, target: "_blank", rel: "noopener" });
  a.addEventListener("click", (event) => {
    event.preventDefault();
    const tab = window.open("", "_blank"); // now, while the click lets a tab open
    if (tab) tab.opener = null;
    void (async () => {
      const answer = await fetch(href, { headers: authHeaders() });
      const json = answer.ok && /json/.test(answer.headers.get("content-type") ?? "");
      const body = new Blob([await answer.arrayBuffer()], { type: json ? "application/json" : "text/plain" });
      const url = URL.createObjectURL(body);
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      if (tab) tab.location.href = url;
      else a.title = `${href}: the browser refused to open a tab; allow pop-ups for this site`;
    })().catch((err: unknown) => {
      const said = `${href}: ${(err as Error).message}`;
      if (tab) tab.document.body.textContent = said;
      else a.title = said;
    });
  });
  return a;
}
