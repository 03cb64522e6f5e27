// The geomlops web app: sign in with an API key, then catalogue, run, results, promotions.
import "./style.css";
import { api, apiKey, setApiKey } from "./api";
import { field, h, status } from "./dom";
import { cataloguePage } from "./pages/catalogue";
import { promotionsPage } from "./pages/promotions";
import { resultsPage } from "./pages/results";
import { runPage } from "./pages/run";
import type { Session } from "./session";
import * as lonlat from "./lonlat";

declare global {
  interface Window {
    /** The longitude helpers (the browser tests call them on edge cases). */
    geomlopsLonLat?: typeof lonlat;
  }
}
window.geomlopsLonLat = lonlat;

const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;
const who = document.getElementById("who") as HTMLElement;
let session: Session | null = null;

function signIn(message = ""): void {
  nav.hidden = true;
  who.replaceChildren();
  const key = h("input", { type: "password", name: "api-key", autocomplete: "off", required: true });
  const say = status();
  const form = h("form", { class: "signin", "aria-labelledby": "signin-h" },
    h("h2", { id: "signin-h", text: "Sign in" }),
    field("API key", key, "Kept for this browser tab only (session storage)"),
    h("button", { type: "submit", class: "primary", text: "Sign in" }), say);
  if (message) say.say(message, true);
  main.replaceChildren(form);
  key.focus();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    setApiKey(key.value.trim());
    try {
      await start();
      if (!location.hash || location.hash === "#/signin") location.hash = "#/catalogue";
      else void route();
    } catch (err) {
      setApiKey(null);
      say.say((err as Error).message, true);
    }
  });
}

async function start(): Promise<void> {
  const [me, config] = await Promise.all([api.whoami(), api.config()]);
  session = { who: me, config };
  nav.hidden = false;
  const out = h("button", { type: "button", text: "Sign out" });
  out.addEventListener("click", () => {
    setApiKey(null);
    session = null;
    location.hash = "#/signin";
    signIn();
  });
  who.replaceChildren(h("span", { "data-role": me.role, text: `${me.name} (${me.role})` }), " ", out);
}

async function route(): Promise<void> {
  if (!session) return;
  window.geomlopsMap?.remove();
  window.geomlopsMap = undefined;
  const [, page = "catalogue", id] = location.hash.split("/").map(decodeURIComponent);
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${page}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  document.title = `geomlops: ${page}`;
  const pages: Record<string, (root: HTMLElement, s: Session, id?: string) => Promise<void>> = {
    catalogue: cataloguePage,
    run: runPage,
    results: resultsPage,
    promotions: promotionsPage,
  };
  await (pages[page] ?? cataloguePage)(main, session, id);
  main.dataset.ready = page;
}

window.addEventListener("hashchange", () => void route());
if (apiKey()) {
  start()
    .then(route)
    .catch((err: Error) => {
      setApiKey(null);
      signIn(err.message);
    });
} else signIn();
