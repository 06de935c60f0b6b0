// The rich-text editor: a ProseMirror schema, its plugins (Yjs sync, remote cursors,
// collaborative undo, keys, Markdown-style shortcuts) and the toolbar's commands.

import { Schema } from "prosemirror-model";
import { schema as basic } from "prosemirror-schema-basic";
import { addListNodes, liftListItem, sinkListItem, splitListItem, wrapInList } from "prosemirror-schema-list";
import { EditorState, Plugin, Selection, TextSelection } from "prosemirror-state";
import { Decoration, DecorationSet, EditorView } from "prosemirror-view";
import { keymap } from "prosemirror-keymap";
import { baseKeymap, chainCommands, exitCode, lift, setBlockType, toggleMark, wrapIn } from "prosemirror-commands";
import {
  InputRule,
  ellipsis,
  emDash,
  inputRules,
  smartQuotes,
  textblockTypeInputRule,
  wrappingInputRule,
} from "prosemirror-inputrules";
import { dropCursor } from "prosemirror-dropcursor";
import { gapCursor } from "prosemirror-gapcursor";
import { prosemirrorToYXmlFragment, redoCommand, undoCommand, yCursorPlugin, ySyncPlugin, yUndoPlugin } from "y-prosemirror";
import { isColour } from "./util.js";

// ---------------------------------------------------------------------------------------------
// Schema: prosemirror-schema-basic without images (a pasted image would load from anywhere),
// with bullet and ordered lists, and links that only ever point at http(s) or mailto.

/** The href as written, if it is http(s) or mailto; else null. */
export function safeHref(href) {
  if (typeof href !== "string") return null;
  try {
    const url = new URL(href, location.href);
    return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/** What a person typed in the link box, as a link: "example.com" → "https://example.com/". */
export function normaliseHref(typed) {
  const text = String(typed ?? "").trim();
  if (text === "") return null;
  const withScheme = /^[a-z][a-z0-9+.-]*:/i.test(text) ? text : text.includes("@") && !text.includes("/") ? `mailto:${text}` : `https://${text}`;
  return safeHref(withScheme);
}

const link = {
  ...basic.spec.marks.get("link"),
  toDOM(mark) {
    const href = safeHref(mark.attrs.href);
    return ["a", { href: href ?? "#", title: href ?? "", rel: "noopener noreferrer nofollow" }, 0];
  },
};

export const schema = new Schema({
  nodes: addListNodes(basic.spec.nodes.remove("image"), "paragraph block*", "block"),
  marks: basic.spec.marks.update("link", link),
});

const { nodes, marks } = schema;

// ---------------------------------------------------------------------------------------------
// Commands and what the toolbar shows.

function markActive(state, type) {
  const { from, $from, to, empty } = state.selection;
  if (empty) return Boolean(type.isInSet(state.storedMarks || $from.marks()));
  return state.doc.rangeHasMark(from, to, type);
}

function blockActive(state, type, attrs = {}) {
  const { $from, to } = state.selection;
  return to <= $from.end() && $from.parent.hasMarkup(type, attrs);
}

/** The innermost list around the selection, or null. */
function listAround(state) {
  const { $from } = state.selection;
  for (let depth = $from.depth; depth > 0; depth--) {
    const node = $from.node(depth);
    if (node.type === nodes.bullet_list || node.type === nodes.ordered_list) return node.type;
  }
  return null;
}

function inBlockquote(state) {
  const { $from } = state.selection;
  for (let depth = $from.depth; depth > 0; depth--) if ($from.node(depth).type === nodes.blockquote) return true;
  return false;
}

/** Heading `level` on, or back to a paragraph when it is already on. */
function toggleHeading(level) {
  return (state, dispatch) =>
    blockActive(state, nodes.heading, { level })
      ? setBlockType(nodes.paragraph)(state, dispatch)
      : setBlockType(nodes.heading, { level })(state, dispatch);
}

/** Into a list of `type`; out of it when already in one; switches bullet ↔ ordered. */
function toggleList(type) {
  return (state, dispatch) => {
    const current = listAround(state);
    if (current === type) return liftListItem(nodes.list_item)(state, dispatch);
    if (current) {
      if (!dispatch) return true;
      const { $from } = state.selection;
      for (let depth = $from.depth; depth > 0; depth--) {
        if ($from.node(depth).type === current) {
          dispatch(state.tr.setNodeMarkup($from.before(depth), type));
          return true;
        }
      }
      return false;
    }
    return wrapInList(type)(state, dispatch);
  };
}

function toggleQuote(state, dispatch) {
  return inBlockquote(state) ? lift(state, dispatch) : wrapIn(nodes.blockquote)(state, dispatch);
}

/**
 * The toolbar's buttons: `id` is the button's data-command in index.html.
 * `run` is a ProseMirror command; `active` says whether it shows as pressed.
 */
export const TOOLBAR = [
  { id: "undo", run: undoCommand },
  { id: "redo", run: redoCommand },
  { id: "paragraph", run: setBlockType(nodes.paragraph), active: (s) => blockActive(s, nodes.paragraph) },
  { id: "h1", run: toggleHeading(1), active: (s) => blockActive(s, nodes.heading, { level: 1 }) },
  { id: "h2", run: toggleHeading(2), active: (s) => blockActive(s, nodes.heading, { level: 2 }) },
  { id: "bold", run: toggleMark(marks.strong), active: (s) => markActive(s, marks.strong) },
  { id: "italic", run: toggleMark(marks.em), active: (s) => markActive(s, marks.em) },
  { id: "code", run: toggleMark(marks.code), active: (s) => markActive(s, marks.code) },
  { id: "link", run: null, active: (s) => markActive(s, marks.link) }, // opens the link box (app.js)
  { id: "bullet", run: toggleList(nodes.bullet_list), active: (s) => listAround(s) === nodes.bullet_list },
  { id: "ordered", run: toggleList(nodes.ordered_list), active: (s) => listAround(s) === nodes.ordered_list },
  { id: "quote", run: toggleQuote, active: inBlockquote },
];

/** The link around the cursor: { from, to, href } (the whole link), or null. */
export function linkAt(state) {
  const { $from, from, to, empty } = state.selection;
  const type = marks.link;
  if (!empty) {
    let found = null;
    state.doc.nodesBetween(from, to, (node) => {
      found ??= type.isInSet(node.marks)?.attrs.href ?? null;
    });
    return found === null ? null : { from, to, href: found };
  }
  const mark = type.isInSet($from.marks());
  if (!mark) return null;
  // Grow from the cursor to the whole run of text carrying this same link.
  const parent = $from.parent;
  const start = $from.start();
  let index = $from.index();
  if (index >= parent.childCount || !mark.isInSet(parent.child(index).marks)) index--;
  let startIndex = index;
  let endIndex = index + 1;
  while (startIndex > 0 && mark.isInSet(parent.child(startIndex - 1).marks)) startIndex--;
  while (endIndex < parent.childCount && mark.isInSet(parent.child(endIndex).marks)) endIndex++;
  let pos = start;
  let linkFrom = start;
  let linkTo = start;
  for (let i = 0; i < parent.childCount; i++) {
    const size = parent.child(i).nodeSize;
    if (i === startIndex) linkFrom = pos;
    if (i === endIndex - 1) linkTo = pos + size;
    pos += size;
  }
  return { from: linkFrom, to: linkTo, href: mark.attrs.href };
}

/**
 * Sets the link on the selection (or on the link around the cursor) to `href`; null removes
 * it. With nothing selected and no link there, inserts the address itself as a link.
 */
export function setLink(view, href) {
  const { state } = view;
  const type = marks.link;
  const around = linkAt(state);
  const { from, to, empty } = state.selection;
  let tr = state.tr;
  if (around) {
    tr = tr.removeMark(around.from, around.to, type);
    if (href) tr = tr.addMark(around.from, around.to, type.create({ href }));
  } else if (!empty) {
    tr = tr.removeMark(from, to, type);
    if (href) tr = tr.addMark(from, to, type.create({ href }));
  } else if (href) {
    const text = href.replace(/^mailto:/, "");
    tr = tr.insert(from, schema.text(text, [type.create({ href })]));
    tr = tr.setSelection(TextSelection.create(tr.doc, from + text.length)).setStoredMarks([]);
  }
  view.dispatch(tr.scrollIntoView());
  view.focus();
}

/**
 * The first content of a new document, written straight into its (empty) Y.XmlFragment before
 * the editor is shown: its title as a heading, then an empty paragraph.
 */
export function writeTitle(fragment, title) {
  const doc = nodes.doc.create(null, [nodes.heading.create({ level: 1 }, schema.text(title)), nodes.paragraph.create()]);
  prosemirrorToYXmlFragment(doc, fragment);
}

/** Puts the cursor at the end of the document. */
export function cursorToEnd(view) {
  view.dispatch(view.state.tr.setSelection(Selection.atEnd(view.state.doc)).scrollIntoView());
}

// ---------------------------------------------------------------------------------------------
// Keys and Markdown-style shortcuts.

function buildKeymap(onLink) {
  const keys = {
    "Mod-z": undoCommand,
    "Mod-y": redoCommand,
    "Shift-Mod-z": redoCommand,
    "Mod-b": toggleMark(marks.strong),
    "Mod-B": toggleMark(marks.strong),
    "Mod-i": toggleMark(marks.em),
    "Mod-I": toggleMark(marks.em),
    "Mod-`": toggleMark(marks.code),
    "Mod-k": (state, dispatch) => {
      if (dispatch) onLink();
      return true;
    },
    "Shift-Ctrl-0": setBlockType(nodes.paragraph),
    "Shift-Ctrl-1": setBlockType(nodes.heading, { level: 1 }),
    "Shift-Ctrl-2": setBlockType(nodes.heading, { level: 2 }),
    "Shift-Ctrl-3": setBlockType(nodes.heading, { level: 3 }),
    "Shift-Ctrl-8": wrapInList(nodes.bullet_list),
    "Shift-Ctrl-9": wrapInList(nodes.ordered_list),
    "Ctrl->": wrapIn(nodes.blockquote),
    Enter: splitListItem(nodes.list_item),
    "Mod-[": liftListItem(nodes.list_item),
    "Mod-]": sinkListItem(nodes.list_item),
    Tab: sinkListItem(nodes.list_item),
    "Shift-Tab": liftListItem(nodes.list_item),
  };
  const hardBreak = chainCommands(exitCode, (state, dispatch) => {
    if (dispatch) dispatch(state.tr.replaceSelectionWith(nodes.hard_break.create()).scrollIntoView());
    return true;
  });
  keys["Mod-Enter"] = hardBreak;
  keys["Shift-Enter"] = hardBreak;
  return keys;
}

/**
 * Markdown-style marks: **bold**, *italic* or _italic_, `code`. `regexp` ends with the closing
 * delimiter (the key just typed) and captures the opening delimiter and the text.
 */
function markRule(regexp, type) {
  return new InputRule(regexp, (state, match, start, end) => {
    const [full, open, text] = match;
    const openAt = start + full.length - open.length * 2 - text.length; // after any leading char
    const textAt = openAt + open.length;
    const textEnd = textAt + text.length;
    // [start, end) holds everything but the closing delimiter's last character (not typed yet).
    const tr = state.tr.delete(textEnd, end).delete(openAt, textAt);
    tr.addMark(openAt, openAt + text.length, type.create()).removeStoredMark(type);
    return tr;
  });
}

function buildInputRules() {
  return inputRules({
    rules: [
      ...smartQuotes,
      ellipsis,
      emDash,
      markRule(/(?:^|[^*\w])(\*\*)([^*\s](?:[^*]*[^*\s])?)\*\*$/, marks.strong),
      markRule(/(?:^|[^*\w])(\*)([^*\s](?:[^*]*[^*\s])?)\*$/, marks.em),
      markRule(/(?:^|[^_\w])(_)([^_\s](?:[^_]*[^_\s])?)_$/, marks.em),
      markRule(/(?:^|[^`\w])(`)([^`]+)`$/, marks.code),
      wrappingInputRule(/^\s*>\s$/, nodes.blockquote),
      wrappingInputRule(
        /^(\d+)\.\s$/,
        nodes.ordered_list,
        (match) => ({ order: Number(match[1]) }),
        (match, node) => node.childCount + node.attrs.order === Number(match[1]),
      ),
      wrappingInputRule(/^\s*([-+*])\s$/, nodes.bullet_list),
      textblockTypeInputRule(/^```$/, nodes.code_block),
      textblockTypeInputRule(/^(#{1,3})\s$/, nodes.heading, (match) => ({ level: match[1].length })),
      new InputRule(/^(?:---|___|\*\*\*)$/, (state, _match, start, end) =>
        state.tr.replaceWith(start - 1, end, [nodes.horizontal_rule.create(), nodes.paragraph.create()]),
      ),
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// Remote cursors: a caret in the person's colour with their name above it, and their
// selection tinted in the same colour. Names are text, never HTML.

function cursorBuilder(user) {
  const colour = isColour(user?.color) ? user.color : "#6a7287";
  const caret = document.createElement("span");
  caret.className = "remote-caret";
  caret.style.setProperty("--colour", colour);
  const label = document.createElement("span");
  label.className = "remote-caret-label";
  label.textContent = String(user?.name ?? "someone").slice(0, 32);
  caret.append("\u2060", label, "\u2060");
  return caret;
}

function selectionBuilder(user) {
  const colour = isColour(user?.color) ? user.color : "#6a7287";
  return { class: "remote-selection", style: `background-color: ${colour}33` };
}

// ---------------------------------------------------------------------------------------------

/**
 * Creates the editor in `mount`, bound to the Y.XmlFragment `fragment`, with the others'
 * cursors from `awareness`. `onState(state)` is called after every change (the toolbar),
 * `onLink()` when Mod-K is pressed.
 */
export function createEditor({ mount, fragment, awareness, onState, onLink, label, placeholder }) {
  const stateWatcher = new Plugin({
    view: () => ({ update: (view) => onState(view.state) }),
  });
  // "Start writing…" in an empty document.
  const emptyHint = new Plugin({
    props: {
      decorations(state) {
        const { doc } = state;
        const first = doc.firstChild;
        if (doc.childCount !== 1 || !first.isTextblock || first.content.size !== 0) return null;
        return DecorationSet.create(doc, [Decoration.node(0, first.nodeSize, { class: "empty-hint", "data-placeholder": placeholder })]);
      },
    },
  });
  const state = EditorState.create({
    schema,
    plugins: [
      ySyncPlugin(fragment),
      yCursorPlugin(awareness, { cursorBuilder, selectionBuilder }),
      yUndoPlugin(),
      buildInputRules(),
      keymap(buildKeymap(onLink)),
      keymap(baseKeymap),
      dropCursor({ color: "var(--accent)", width: 2 }),
      gapCursor(),
      emptyHint,
      stateWatcher,
    ],
  });
  const view = new EditorView(mount, {
    state,
    attributes: { class: "doc-body", spellcheck: "true", "aria-label": label, "aria-multiline": "true", role: "textbox" },
    handleClickOn(_view, _pos, node, _nodePos, event) {
      // Ctrl/⌘-click follows a link (a plain click puts the cursor in it, to edit it).
      const a = event.target.closest?.("a[href]");
      if (a && (event.metaKey || event.ctrlKey)) {
        const href = safeHref(a.getAttribute("href"));
        if (href) window.open(href, "_blank", "noopener,noreferrer");
        return true;
      }
      return false;
    },
  });
  onState(view.state);
  return view;
}
