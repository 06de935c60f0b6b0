#!/usr/bin/env node
// Prints the import map that web/editor/index.html needs, or checks it (--check).
//
//   node tools/importmap.mjs            print {"imports": {...}} for the installed packages
//   node tools/importmap.mjs --check    exit 1 (and say what differs) if index.html's map is stale
//
// It walks the ES module graph the way the browser will: from the bare imports of the app's
// own files (web/editor/*.js), through web/editor/node_modules, resolving each package's
// "exports" with the browser's conditions (browser, import, module, default: the first that
// the package lists wins, as in Node). Every bare specifier reached gets an entry pointing at
// ./vendor/<package>/<file>, which the server serves from the files that
// crates/switchboard/build.rs embeds (it follows the same graph from the same map).
//
// Run it after changing package versions (npm install --save-exact ...), and paste its output
// into the <script type="importmap"> of index.html. Dev tooling only: nothing runs it at
// build time, and the page does not need it.

import { readFileSync, readdirSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const EDITOR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const MODULES = path.join(EDITOR, "node_modules");
const CONDITIONS = new Set(["browser", "import", "module", "default"]);

/** The specifiers a module imports statically (one import/export … from '…' per line). */
export function importsOf(source) {
  const found = [];
  for (const line of source.split("\n")) {
    const m =
      line.match(/^\s*(?:import|export|\})[^'"]*?\bfrom\s*(['"])([^'"]+)\1/) ??
      line.match(/^\s*import\s*(['"])([^'"]+)\1/);
    if (m) found.push(m[2]);
  }
  return found;
}

function splitBare(spec) {
  const parts = spec.split("/");
  const n = spec.startsWith("@") ? 2 : 1;
  return { pkg: parts.slice(0, n).join("/"), sub: parts.length > n ? "./" + parts.slice(n).join("/") : "." };
}

function pickTarget(target) {
  if (typeof target === "string") return target;
  if (target === null || typeof target !== "object") return null;
  for (const [key, value] of Object.entries(target)) {
    if (CONDITIONS.has(key)) {
      const picked = pickTarget(value);
      if (picked) return picked;
    }
  }
  return null;
}

/** Resolves a bare specifier to a file path relative to node_modules, e.g. "lib0/map.js". */
function resolveBare(spec) {
  const { pkg, sub } = splitBare(spec);
  const manifestPath = path.join(MODULES, pkg, "package.json");
  if (!existsSync(manifestPath)) throw new Error(`package ${pkg} (for "${spec}") is not installed: run npm ci in web/editor`);
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
  let target = null;
  if (manifest.exports !== undefined) {
    const exp = manifest.exports;
    const isSubpathMap = typeof exp === "object" && exp !== null && Object.keys(exp).some((k) => k.startsWith("."));
    target = pickTarget(isSubpathMap ? exp[sub] : sub === "." ? exp : undefined);
  } else if (sub === ".") {
    target = manifest.module ?? manifest.main ?? "index.js";
  } else {
    target = sub;
  }
  if (!target) throw new Error(`"${spec}": package ${pkg} exports nothing for ${sub} under the browser conditions`);
  return path.posix.join(pkg, target);
}

/** { specifier: "./vendor/<pkg>/<file>" } for every bare import reachable from the app. */
export function buildImportMap() {
  const appFiles = readdirSync(EDITOR).filter((f) => f.endsWith(".js"));
  const imports = {};
  const seen = new Set();
  const queue = [];
  const visitBare = (spec) => {
    if (spec in imports) return;
    const file = resolveBare(spec);
    imports[spec] = `./vendor/${file}`;
    queue.push(file);
  };
  for (const f of appFiles) {
    for (const spec of importsOf(readFileSync(path.join(EDITOR, f), "utf8"))) {
      if (!spec.startsWith(".") && !spec.startsWith("/")) visitBare(spec);
    }
  }
  while (queue.length > 0) {
    const file = queue.shift();
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(path.join(MODULES, file), "utf8");
    for (const spec of importsOf(source)) {
      if (spec.startsWith(".")) queue.push(path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)));
      else visitBare(spec);
    }
  }
  const sorted = Object.fromEntries(Object.entries(imports).sort(([a], [b]) => a.localeCompare(b)));
  return { imports: sorted, files: [...seen].sort() };
}

/** The import map written in index.html. */
export function currentImportMap() {
  const html = readFileSync(path.join(EDITOR, "index.html"), "utf8");
  const m = html.match(/<script type="importmap">([\s\S]*?)<\/script>/);
  if (!m) throw new Error("index.html has no <script type=\"importmap\">");
  return JSON.parse(m[1]);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { imports, files } = buildImportMap();
  if (process.argv.includes("--check")) {
    const current = currentImportMap().imports ?? {};
    const problems = [];
    for (const [spec, url] of Object.entries(imports)) {
      if (current[spec] !== url) problems.push(`${spec}: index.html has ${current[spec] ?? "nothing"}, needs ${url}`);
    }
    for (const spec of Object.keys(current)) if (!(spec in imports)) problems.push(`${spec}: in index.html, not needed`);
    if (problems.length > 0) {
      console.error(`The import map in web/editor/index.html is stale:\n  ${problems.join("\n  ")}\nRegenerate it with: node web/editor/tools/importmap.mjs`);
      process.exit(1);
    }
    console.log(`import map OK: ${Object.keys(imports).length} specifiers, ${files.length} files`);
  } else {
    console.log(JSON.stringify({ imports }, null, 2));
    if (process.argv.includes("--files")) console.error(files.join("\n"));
  }
}
