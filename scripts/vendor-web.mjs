// Copies the browser-side packages the web client serves from node_modules into
// src/visavis/web/vendor/<package>/ (git-ignored): visavis serves every asset itself,
// no CDN and no bundler. Run by scripts/setup after `npm ci`.
import { cpSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const vendor = join(root, "src", "visavis", "web", "vendor");

// [package, paths inside it to copy]; a directory is copied whole.
const PACKAGES = [
  ["preact", ["dist", "hooks/dist", "package.json", "LICENSE"]],
  ["htm", ["dist", "preact", "package.json", "LICENSE"]],
  ["@mediapipe/selfie_segmentation", ["."]],
  ["@sapphi-red/web-noise-suppressor", ["dist", "package.json", "LICENSE"]],
  ["axe-core", ["axe.min.js", "LICENSE"]],
];

rmSync(vendor, { recursive: true, force: true });
for (const [name, paths] of PACKAGES) {
  const source = join(root, "node_modules", name);
  if (!existsSync(source)) {
    console.error(`vendor-web: ${name} is missing from node_modules: run 'npm ci' first`);
    process.exit(1);
  }
  for (const path of paths) {
    const from = join(source, path);
    if (!existsSync(from)) continue; // optional file (a LICENSE some versions lack)
    const to = join(vendor, name, path);
    mkdirSync(dirname(to), { recursive: true });
    cpSync(from, to, { recursive: true });
  }
}
console.log(`vendor-web: ${PACKAGES.length} packages copied to ${vendor}`);
