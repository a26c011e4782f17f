// Bundles the dashboard into the Python package (src/statehub/web/dashboard/), where the
// web edge serves it and the wheel ships it.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const out = new URL("../src/statehub/web/dashboard/", import.meta.url).pathname;
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  sourcemap: false,
  outfile: `${out}app.js`,
  loader: { ".css": "css" },
  logLevel: "warning",
});
copyFileSync("src/index.html", `${out}index.html`);
copyFileSync("src/favicon.svg", `${out}favicon.svg`);
