//! The web apps and the browser SDK, embedded at build time (see build.rs).

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The embedded file for a URL path: `/` and directories map to their `index.html`.
pub fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    let find = |p: &str| ASSETS.iter().find(|(name, _)| *name == p).map(|(_, b)| *b);
    let (path, bytes) = if path.ends_with('/') {
        let index = format!("{path}index.html");
        (index.clone(), find(&index)?)
    } else {
        (path.to_owned(), find(path)?)
    };
    Some((bytes, content_type(&path)))
}

/// The Content-Security-Policy of the page at `path` (after mapping `/` to `index.html`).
///
/// Scripts only from this origin (plus each page's own inline scripts, by hash: the editor's
/// import map), connections only to it (`'self'` covers `ws:`/`wss:` to the same host), no
/// plugins, no `<base>` rewriting, and no framing by other sites (clickjacking): a page of
/// another origin cannot put the chat in an invisible frame. Inline styles are allowed:
/// the editor's collaboration cursors set their colours in `style` attributes, and CSS
/// cannot run script.
pub fn content_security_policy(path: &str) -> String {
    let page = if path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    let inline = INLINE_SCRIPTS
        .iter()
        .find(|(p, _)| *p == page)
        .map_or("", |(_, hashes)| *hashes);
    let sep = if inline.is_empty() { "" } else { " " };
    format!(
        "default-src 'self'; script-src 'self'{sep}{inline}; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'self'"
    )
}

/// Whether `path` names a directory with an index page (so `/chat` can redirect to `/chat/`).
pub fn is_directory(path: &str) -> bool {
    let index = format!("{path}/index.html");
    ASSETS.iter().any(|(name, _)| *name == index)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "ts" => "text/plain; charset=utf-8",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
