// Bundles main.js, Spark and three.js into one IIFE (../assets/viewer.js) that viewer.html inlines,
// and copies the licences of what it bundles beside it; minifies avatar.js, the 4D page's player
// (no dependencies), into ../assets/avatar4d.js. Run `npm ci && npm run build` here.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const out = new URL("../assets/", import.meta.url);
mkdirSync(out, { recursive: true });
for (const [entry, bundled] of [["main.js", "viewer.js"], ["avatar.js", "avatar4d.js"]]) {
  await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: "iife",
    target: "es2020",
    platform: "browser",
    legalComments: "none",
    outfile: new URL(bundled, out).pathname,
  });
}
for (const [pkg, name] of [["@sparkjsdev/spark", "spark"], ["three", "three"], ["fflate", "fflate"]]) {
  copyFileSync(`node_modules/${pkg}/LICENSE`, new URL(`LICENSE.${name}.txt`, out).pathname);
}
