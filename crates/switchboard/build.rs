//! Embeds the web apps (`web/`) and the browser SDK (`clients/js/src/`) into the binary,
//! so one file serves everything. Generates a table of (URL path, bytes).
//!
//! The editor (`web/editor/`) loads npm packages (yjs, y-websocket, y-prosemirror,
//! ProseMirror) without a bundler, through the import map in `web/editor/index.html`, from
//! `/editor/vendor/<package>/<file>`. Those files are embedded from `web/editor/node_modules`:
//! only the ones the page can load, found by following the imports (static `import … from`,
//! `export … from`, `import '…'`) from every `./vendor/…` URL that index.html names, resolving
//! bare specifiers through the import map; and only `.js`, `.mjs` and `.css` files. Any other
//! `node_modules` is skipped. Without `web/editor/node_modules` (no `npm ci` yet) the build
//! still succeeds, with a warning, and the editor page says that its packages are missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the editor's vendored files are served: `./vendor/` relative to `/editor/`.
const EDITOR_DIR: &str = "web/editor";
const VENDOR_URL: &str = "/editor/vendor/";

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let mounts = [("web", "/"), ("clients/js/src", "/sdk/")];
    let mut table = String::from("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    // URL path of each page → the `'sha256-…'` sources of its inline scripts, for its
    // Content-Security-Policy (the editor's import map cannot be an external file).
    let mut inline_scripts = String::from("pub static INLINE_SCRIPTS: &[(&str, &str)] = &[\n");
    let add = |table: &mut String, url: String, file: &Path| {
        let abs = file.canonicalize().unwrap();
        writeln!(table, "    ({url:?}, include_bytes!({abs:?})),").unwrap();
    };
    for (dir, prefix) in mounts {
        let dir = root.join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files = Vec::new();
        collect(&dir, &mut files);
        files.sort();
        for file in files {
            let rel = file
                .strip_prefix(&dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel.ends_with(".html") {
                let html = std::fs::read_to_string(&file).unwrap();
                let sources = script_hashes(&html);
                writeln!(
                    inline_scripts,
                    "    ({:?}, {sources:?}),",
                    format!("{prefix}{rel}")
                )
                .unwrap();
            }
            add(&mut table, format!("{prefix}{rel}"), &file);
        }
    }
    for (rel, file) in editor_vendor_files(&root.join(EDITOR_DIR)) {
        add(&mut table, format!("{VENDOR_URL}{rel}"), &file);
    }
    table.push_str("];\n");
    inline_scripts.push_str("];\n");
    table.push_str(&inline_scripts);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("web_assets.rs");
    std::fs::write(out, table).unwrap();
}

/// `'sha256-…'` for each inline `<script>` of `html` (those without `src`), space-separated.
fn script_hashes(html: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut sources = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let tag = &after[..open_end];
        let body = &after[open_end + 1..];
        let Some(close) = body.find("</script>") else {
            break;
        };
        if !tag.contains(" src=") {
            let digest = sha2::Sha256::digest(&body.as_bytes()[..close]);
            let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
            sources.push(format!("'sha256-{b64}'"));
        }
        rest = &body[close..];
    }
    sources.join(" ")
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Dotfiles, dependencies (the editor's are embedded below, selectively), npm manifests
        // and developer tools are not part of any page.
        if name.starts_with('.')
            || name == "node_modules"
            || name == "package.json"
            || name == "package-lock.json"
        {
            continue;
        }
        if path.is_dir() {
            if name == "tools" {
                continue;
            }
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The files of `web/editor/node_modules` the editor page loads: (path under node_modules,
/// file). Warns (and embeds what it can) when the import map or the packages are incomplete.
fn editor_vendor_files(editor: &Path) -> Vec<(String, PathBuf)> {
    let Ok(html) = std::fs::read_to_string(editor.join("index.html")) else {
        return Vec::new();
    };
    let modules = editor.join("node_modules");
    if !modules.is_dir() {
        println!(
            "cargo:warning=web/editor/node_modules is missing: the editor at /editor/ will say \
             that its packages are not installed. Run `npm ci` in web/editor and build again \
             (scripts/start.sh does both)."
        );
        return Vec::new();
    }
    let import_map = match parse_import_map(&html) {
        Ok(map) => map,
        Err(error) => {
            println!("cargo:warning=web/editor/index.html: {error}; no editor packages embedded");
            return Vec::new();
        }
    };

    // Start from every ./vendor/ URL the page names (import map targets, stylesheets).
    let mut queue: Vec<String> = vendor_urls(&html);
    let mut seen = BTreeSet::new();
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    while let Some(rel) = queue.pop() {
        if !seen.insert(rel.clone()) {
            continue;
        }
        let ext = rel.rsplit('.').next().unwrap_or("");
        if !matches!(ext, "js" | "mjs" | "css") {
            problems.push(format!("{rel}: not a .js, .mjs or .css file"));
            continue;
        }
        let file = modules.join(&rel);
        let Ok(source) = std::fs::read_to_string(&file) else {
            problems.push(format!("{rel}: not found in web/editor/node_modules"));
            continue;
        };
        files.insert(rel.clone(), file);
        if ext == "css" {
            continue;
        }
        for spec in static_imports(&source) {
            if spec.starts_with("./") || spec.starts_with("../") {
                let dir = rel.rsplit_once('/').map_or("", |(dir, _)| dir);
                match normalize(&format!("{dir}/{spec}")) {
                    Some(target) => queue.push(target),
                    None => problems.push(format!("{rel}: import {spec:?} leaves node_modules")),
                }
            } else if let Some(url) = import_map.get(&spec) {
                match url.strip_prefix("./vendor/") {
                    Some(target) => queue.push(target.to_owned()),
                    None => problems.push(format!("{spec}: mapped outside ./vendor/ ({url})")),
                }
            } else {
                problems.push(format!(
                    "{rel} imports {spec:?}, which the import map does not map"
                ));
            }
        }
    }
    if !problems.is_empty() {
        println!(
            "cargo:warning=the editor's import map or packages are incomplete ({} problems; \
             `npm ci` in web/editor, then `node web/editor/tools/importmap.mjs --check`): {}",
            problems.len(),
            problems.join("; ")
        );
    }
    files.into_iter().collect()
}

/// The `"imports"` of the `<script type="importmap">` in `html`: specifier → URL.
fn parse_import_map(html: &str) -> Result<BTreeMap<String, String>, String> {
    let start_tag = "<script type=\"importmap\">";
    let start = html
        .find(start_tag)
        .ok_or("no <script type=\"importmap\">")?
        + start_tag.len();
    let end = html[start..]
        .find("</script>")
        .ok_or("unterminated import map")?
        + start;
    // The map is {"imports": {"spec": "url", ...}}: its strings, in order, are "imports" and
    // then specifier/URL pairs. (No scopes, no escapes: checked.)
    let body = &html[start..end];
    let mut strings = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let close = after
            .find('"')
            .ok_or("unterminated string in the import map")?;
        let s = &after[..close];
        if s.contains('\\') {
            return Err("escapes in the import map are not supported".into());
        }
        strings.push(s.to_owned());
        rest = &after[close + 1..];
    }
    if strings.first().map(String::as_str) != Some("imports") || strings.len() % 2 != 1 {
        return Err("the import map must be {\"imports\": {...}} only".into());
    }
    Ok(strings[1..]
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect())
}

/// Every `"./vendor/…"` URL in the page, without the prefix.
fn vendor_urls(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for quote in ['"', '\''] {
        let needle = format!("{quote}./vendor/");
        let mut rest = html;
        while let Some(at) = rest.find(&needle) {
            let after = &rest[at + needle.len()..];
            if let Some(end) = after.find(quote) {
                out.push(after[..end].to_owned());
            }
            rest = after;
        }
    }
    out
}

/// The specifiers of a module's static imports and re-exports, one statement per line as in
/// the packages' ES module sources: `import … from '…'`, `} from '…'` (the end of a
/// multi-line import), `export … from '…'` and `import '…'`. Lines of comments and code that
/// do not start with these are ignored.
fn static_imports(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in source.lines() {
        let line = line.trim_start();
        if !(line.starts_with("import") || line.starts_with("export") || line.starts_with('}')) {
            continue;
        }
        let Some(q) = line.find(['\'', '"']) else {
            continue;
        };
        let quote = line.as_bytes()[q] as char;
        let prefix = line[..q].trim_end();
        let is_from = prefix.strip_suffix("from").is_some_and(|before| {
            !before
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        });
        let is_bare_import = prefix == "import";
        if !(is_from || is_bare_import) {
            continue;
        }
        if let Some(end) = line[q + 1..].find(quote) {
            out.push(line[q + 1..q + 1 + end].to_owned());
        }
    }
    out
}

/// "a/b/../c/./d.js" → "a/c/d.js"; None if it climbs out of the root.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    Some(parts.join("/"))
}
