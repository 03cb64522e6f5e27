import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { defineConfig, type Plugin } from "vite";

const ROOT = import.meta.dirname;

/** The files a build is made from (tests/web/test_bundle.py lists the same ones). */
function sources(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
    );
  const fixed = ["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts"];
  return [...fixed.map((f) => join(ROOT, f)), ...walk(join(ROOT, "src"))]
    .map((f) => relative(ROOT, f).split("\\").join("/"))
    .sort();
}

/** Writes SOURCES.sha256 beside the build: the digest of its sources, so that a test without
 * Node.js can tell the committed build was made from the committed sources. */
function sourcesDigest(): Plugin {
  return {
    name: "geomlops-sources-digest",
    generateBundle() {
      const whole = createHash("sha256");
      for (const name of sources()) {
        const one = createHash("sha256").update(readFileSync(join(ROOT, name))).digest("hex");
        whole.update(`${name}\0${one}\n`);
      }
      this.emitFile({ type: "asset", fileName: "SOURCES.sha256", source: `${whole.digest("hex")}\n` });
    },
  };
}

// The gateway serves index.html at "/" and everything else under "/app/" from
// geomlops/gateway/web_dist (committed, so a machine without Node.js still has the app).
export default defineConfig({
  base: "/app/",
  plugins: [sourcesDigest()],
  build: {
    outDir: "../geomlops/gateway/web_dist",
    emptyOutDir: true,
    assetsDir: "assets",
    chunkSizeWarningLimit: 2000,
    sourcemap: false,
  },
});
