// Starts the editor (app.js), or says plainly why it cannot.
//
// app.js imports the npm packages through the import map in index.html; the server serves
// them from web/editor/node_modules as they were when it was built. If they were not
// installed then, the import fails, and this page says how to fix it instead of staying blank.

const PROBE = new URL("./vendor/yjs/dist/yjs.mjs", import.meta.url);

import("./app.js").catch(async (error) => {
  console.error("editor: could not start", error);
  let missing = false;
  try {
    const res = await fetch(PROBE, { method: "HEAD", cache: "no-store" });
    missing = res.status === 404;
  } catch {
    // the server itself is unreachable: the generic message below
  }
  const box = document.getElementById("load-error");
  const title = document.getElementById("load-error-title");
  const text = document.getElementById("load-error-text");
  const p = (...parts) => {
    const el = document.createElement("p");
    for (const part of parts) {
      if (typeof part === "string") el.append(part);
      else {
        const code = document.createElement("code");
        code.textContent = part.code;
        el.append(code);
      }
    }
    return el;
  };
  if (missing) {
    title.textContent = "The editor packages were not installed";
    text.replaceChildren(
      p("This server was built without the editor's npm packages (yjs, y-websocket, y-prosemirror, ProseMirror), so it cannot serve them."),
      p("Install them and rebuild the server, from the repository root:"),
      p({ code: "scripts/start.sh" }),
      p("or by hand: ", { code: "(cd web/editor && npm ci)" }, " then ", { code: "cargo build --release -p switchboard" }, "."),
    );
  } else {
    title.textContent = "The editor could not start";
    text.replaceChildren(
      p("Something it needs did not load: ", { code: String(error?.message ?? error) }),
      p("Reload the page. If it keeps happening, the server may have been built from an inconsistent web/editor (check the browser console)."),
    );
  }
  document.getElementById("join-screen").hidden = true;
  document.getElementById("app").hidden = true;
  box.hidden = false;
  document.body.dataset.connection = "failed";
});
