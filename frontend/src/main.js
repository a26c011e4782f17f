// statehub's dashboard: a live view of one server over the session protocol.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { jsonDiff } from "./jsondiff.js";
import { RemoteError, Session } from "./session.js";

const $ = (id) => document.getElementById(id);
const SUBSCRIPTION_INTERVAL = 0.1; // s: at most 10 updates a second are plenty for a person
const POLL_INTERVAL = 1000; // ms: leases, locks, sessions
const ENDPOINT_POLL_INTERVAL = 2000; // ms: endpoint values and history

const state = new Map();
let session;
let stateSub = null;
let leases = []; // [key, mine, secondsLeft, fetchedAt, holder]

function describeError(error) {
  return error instanceof RemoteError ? error.wire.message : String(error.message ?? error);
}

function showResult(element, text, ok) {
  element.textContent = text;
  element.className = `result ${ok ? "ok" : "error"}`;
}

// -- values ------------------------------------------------------------------------

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// Bytes (msgpack bin, a Uint8Array here) have no JSON: they show, and are edited, as
// {"$bytes": base64}, the same stand-in as the CLI's JSON output (core/values.py).
const BYTES_TAG = "$bytes";

function base64Of(bytes) {
  let text = "";
  for (let start = 0; start < bytes.length; start += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
  }
  return btoa(text);
}

function jsonReplacer(_, v) {
  if (typeof v === "bigint") return Number(v);
  if (v instanceof Uint8Array) return { [BYTES_TAG]: base64Of(v) };
  return v;
}

function toJSON(value, indent) {
  return JSON.stringify(value, jsonReplacer, indent);
}

// JSON text from the editor as a value: {"$bytes": base64} and nothing else is bytes again.
function fromJSON(text) {
  return JSON.parse(text, (_, v) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    const names = Object.keys(v);
    if (names.length !== 1 || names[0] !== BYTES_TAG || typeof v[BYTES_TAG] !== "string") return v;
    return Uint8Array.from(atob(v[BYTES_TAG]), (c) => c.charCodeAt(0));
  });
}

const SUMMARY_CHARS = 160;

// One line for a row: objects and arrays say their size, then as much JSON as fits.
function summarise(value) {
  let head = "";
  if (value instanceof Uint8Array) head = `<${plural(value.length, "byte")}> `;
  else if (Array.isArray(value)) head = `[${plural(value.length, "item")}] `;
  else if (value !== null && typeof value === "object") head = `{${plural(Object.keys(value).length, "key")}} `;
  const text = toJSON(value) ?? "null";
  return head + (text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS)}…` : text);
}

// -- state: a natural-sorted, filtered, virtualised list and a tree by delimiter ------

const ROW_HEIGHT = 22; // px: one line per key
const TREE_CHILDREN_SHOWN = 200;
const collator = new Intl.Collator("en", { numeric: true }); // avatar.2 before avatar.10
const summaries = new Map(); // key -> one-line text (computed when a row is drawn)
const changedAt = new Map(); // key -> performance.now() of its last change (row flash)
let sortedKeys = []; // every key, natural order
let keysDirty = true; // a key came or went: sort again
let viewKeys = []; // the keys shown: sortedKeys filtered
let viewDirty = true;
let drawPending = false;
let treeDirty = true;
const expanded = new Set(); // tree paths open
let selectedKey = null;

function delimiters() {
  return $("delimiters").value || ".";
}

function globToRegExp(glob) {
  const escaped = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${escaped}$`, "i");
}

// The search: a glob (with * or ?) matches the whole key, anything else is a substring.
function searchMatcher() {
  const text = $("search").value.trim();
  if (text === "") return null;
  if (/[*?]/.test(text)) {
    const pattern = globToRegExp(text);
    return (key) => pattern.test(key);
  }
  const needle = text.toLowerCase();
  return (key) => key.toLowerCase().includes(needle);
}

function recompute() {
  if (keysDirty) {
    sortedKeys = [...state.keys()].sort(collator.compare);
    keysDirty = false;
    treeDirty = true;
  }
  const match = searchMatcher();
  const searched = match ? sortedKeys.filter(match) : sortedKeys;
  const prefix = $("prefix").value;
  viewKeys = prefix ? searched.filter((k) => k.startsWith(prefix)) : searched;
  viewDirty = false;
  $("key-count").textContent = `(${viewKeys.length} of ${plural(state.size, "key")})`;
  $("bulk-remove").textContent = `Remove ${plural(viewKeys.length, "matching key")}…`;
  if (treeDirty) renderTree(searched);
}

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    if (viewDirty || keysDirty) recompute();
    drawRows();
  });
}

const rowPool = [];

function drawRows() {
  const list = $("state");
  const space = list.firstElementChild;
  space.style.height = `${viewKeys.length * ROW_HEIGHT}px`;
  const first = Math.max(0, Math.floor(list.scrollTop / ROW_HEIGHT) - 5);
  const count = Math.ceil((list.clientHeight || 600) / ROW_HEIGHT) + 10;
  const last = Math.min(viewKeys.length, first + count);
  const now = performance.now();
  let used = 0;
  for (let index = first; index < last; index++, used++) {
    let row = rowPool[used];
    if (!row) {
      row = document.createElement("div");
      row.className = "krow";
      row.innerHTML = '<span class="k"></span><span class="v"></span>';
      row.onclick = () => selectKey(row.dataset.key);
      space.append(row);
      rowPool.push(row);
    }
    const key = viewKeys[index];
    let summary = summaries.get(key);
    if (summary === undefined) {
      summary = summarise(state.get(key));
      summaries.set(key, summary);
    }
    if (row.dataset.key !== key) {
      row.dataset.key = key;
      row.firstChild.textContent = key;
      row.firstChild.title = key;
    }
    if (row.lastChild.textContent !== summary) row.lastChild.textContent = summary;
    row.style.top = `${index * ROW_HEIGHT}px`;
    row.hidden = false;
    row.classList.toggle("recent", now - (changedAt.get(key) ?? -1e9) < 700);
    row.classList.toggle("selected", key === selectedKey);
  }
  for (let index = used; index < rowPool.length; index++) {
    rowPool[index].hidden = true;
    delete rowPool[index].dataset.key;
  }
}

// The tree: every path ending in a delimiter, with how many keys lie under it.
function renderTree(keys) {
  treeDirty = false;
  const split = new RegExp(`[${delimiters().replace(/[\]\\^-]/g, "\\$&")}]`, "g");
  const root = { children: new Map(), count: keys.length, path: "" };
  for (const key of keys) {
    let node = root;
    split.lastIndex = 0;
    let match;
    while ((match = split.exec(key)) !== null) {
      const path = key.slice(0, match.index + 1);
      let child = node.children.get(path);
      if (!child) {
        child = { children: new Map(), count: 0, path, label: path.slice(node.path.length) };
        node.children.set(path, child);
      }
      child.count++;
      node = child;
    }
  }
  const container = $("tree");
  const all = document.createElement("div");
  all.className = "node";
  all.dataset.node = "";
  all.innerHTML = '<span class="label">(all)</span> <span class="count"></span>';
  all.lastChild.textContent = keys.length;
  all.onclick = () => choosePrefix("");
  const list = [all];
  const walk = (node, depth) => {
    const children = [...node.children.values()].sort((a, b) => collator.compare(a.path, b.path));
    for (const child of children.slice(0, TREE_CHILDREN_SHOWN)) {
      const item = document.createElement("div");
      item.className = "node";
      item.dataset.node = child.path;
      item.style.paddingLeft = `${depth * 0.9 + 0.2}em`;
      const open = expanded.has(child.path);
      const twisty = child.children.size ? (open ? "▾ " : "▸ ") : "  ";
      item.innerHTML = '<span class="twisty"></span><span class="label"></span> <span class="count"></span>';
      item.children[0].textContent = twisty;
      item.children[1].textContent = child.label;
      item.children[2].textContent = child.count;
      item.classList.toggle("current", $("prefix").value === child.path);
      item.children[0].onclick = (event) => {
        event.stopPropagation();
        if (open) expanded.delete(child.path);
        else expanded.add(child.path);
        treeDirty = true;
        viewDirty = true;
        scheduleDraw();
      };
      item.onclick = () => {
        expanded.add(child.path);
        choosePrefix(child.path);
      };
      list.push(item);
      if (open) walk(child, depth + 1);
    }
    if (children.length > TREE_CHILDREN_SHOWN) {
      const more = document.createElement("div");
      more.className = "node muted";
      more.textContent = `… ${children.length - TREE_CHILDREN_SHOWN} more`;
      list.push(more);
    }
  };
  walk(root, 0);
  container.replaceChildren(...list);
}

function choosePrefix(prefix) {
  $("prefix").value = prefix;
  $("state").scrollTop = 0;
  treeDirty = true;
  viewDirty = true;
  scheduleDraw();
}

function applyBatch(batch) {
  const now = performance.now();
  if (batch.snapshot) {
    state.clear();
    summaries.clear();
    keysDirty = true;
  }
  for (const [key, value] of Object.entries(batch.updates)) {
    if (!state.has(key)) keysDirty = true;
    state.set(key, value);
    summaries.delete(key);
    if (!batch.snapshot) changedAt.set(key, now);
  }
  for (const key of batch.removals) {
    if (state.delete(key)) keysDirty = true;
    summaries.delete(key);
    changedAt.delete(key);
  }
  if (keysDirty) viewDirty = true;
  $("revision").textContent = batch.revision;
  recordTail(batch);
  onKeysChanged(batch);
  scheduleDraw();
}

async function subscribeState() {
  if (stateSub !== null) await session.unsubscribe(stateSub);
  stateSub = await session.subscribe("", SUBSCRIPTION_INTERVAL, applyBatch);
}

function wireBrowser() {
  const refilter = () => {
    treeDirty = true;
    viewDirty = true;
    $("state").scrollTop = 0;
    scheduleDraw();
  };
  $("search").oninput = refilter;
  $("prefix").oninput = refilter;
  $("delimiters").oninput = refilter;
  $("state").addEventListener("scroll", scheduleDraw, { passive: true });
  window.addEventListener("resize", scheduleDraw);
  // Rows that flashed fade back on the next frames without a new batch.
  setInterval(() => {
    if (changedAt.size) scheduleDraw();
  }, 250);
}

// -- rights and read-only mode --------------------------------------------------------

let rights = null; // hello's rights: {read, write, lease, lock, call: [...], admin: [...]}; null = all

function may(right, key) {
  if (right === "write" && $("readonly").checked) return false;
  if (rights === null || rights[right] === undefined) return true;
  return rights[right].some((prefix) => key.startsWith(prefix));
}

function mayAny(right) {
  if (right === "write" && $("readonly").checked) return false;
  return rights === null || rights[right] === undefined || rights[right].length > 0;
}

// An admin button (data-admin names its right) is active only for an identity that has it.
function applyAdminRight(button) {
  const allowed = rights === null || rights.admin.includes(button.dataset.admin);
  button.disabled = !allowed || $("readonly").checked;
  button.title = allowed ? "" : `needs the admin right '${button.dataset.admin}'`;
}

function applyRights() {
  const readOnly = $("readonly").checked;
  document.body.classList.toggle("read-only", readOnly);
  for (const button of document.querySelectorAll("button.write")) {
    button.disabled = !mayAny("write");
    button.title = button.disabled ? (readOnly ? "read-only mode" : "this identity may not write") : "";
  }
  for (const button of document.querySelectorAll("button.lease")) button.disabled = !mayAny("lease") || readOnly;
  for (const button of document.querySelectorAll("button.admin")) applyAdminRight(button);
  for (const form of document.querySelectorAll("form.command")) {
    const button = form.querySelector("button.call");
    button.disabled = rights !== null && !rights.call.some((pattern) => globToRegExp(pattern).test(form.dataset.command));
  }
  updateDetailButtons();
}

function wireReadOnly(hello) {
  rights = hello.rights ?? null;
  const toggle = $("readonly");
  if (rights !== null && rights.write.length === 0) {
    toggle.checked = true;
    toggle.disabled = true;
    toggle.parentElement.title = `${hello.identity} has no write right: read-only`;
  }
  toggle.onchange = applyRights;
  applyRights();
}

// -- one key: facts, a JSON editor with validation and preview, compare-and-set -------

let readRevision = null; // the revision the editor's value was read at (null: a new key)
let readValue; // the value as read (undefined: absent)

function formatBytes(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`;
}

async function selectKey(key) {
  selectedKey = key;
  scheduleDraw();
  $("detail-empty").hidden = true;
  $("detail").hidden = false;
  $("detail-key").textContent = key;
  $("write-key").value = key;
  $("write-result").textContent = "";
  await loadKey(key);
}

async function loadKey(key) {
  const [reply, kept] = await Promise.all([session.request("get", { keys: [key], facts: true }), fetchHistory(key)]);
  if (key !== $("write-key").value) return; // another key was opened meanwhile
  const present = key in reply.values;
  readValue = present ? reply.values[key] : undefined;
  readRevision = present ? reply.facts[key][0] : null;
  $("write-value").value = present ? toJSON(readValue, 2) : "";
  keyHistory = kept;
  $("history-block").hidden = false;
  renderFacts(key, present ? reply.facts[key] : null);
  renderHistory();
  validate();
}

let expiresAt = null; // performance.now() when the open key expires (null: it does not)

function renderFacts(key, facts) {
  const lease = leases.find(([leased]) => leased === key);
  const size = readValue === undefined ? null : new TextEncoder().encode(toJSON(readValue)).length;
  // A fourth item: the seconds left of a key that expires (a server with ttl).
  expiresAt = facts && facts.length > 3 ? performance.now() + facts[3] * 1000 : null;
  const rowsData = facts
    ? [
        ["last changed at revision", facts[0], "mod"],
        ["created at revision", facts[1], "created"],
        ["version (changes since created)", facts[2], "version"],
        ["changed by", changedBy(key, facts[0]), "by"],
        ["expires in", expiresIn(), "expires"],
        ["size (JSON)", formatBytes(size), "size"],
        ["lease", lease ? describeLease(lease) : "none", "lease"],
      ]
    : [["", "no such key: Save creates it", "absent"]];
  $("facts").tBodies[0].replaceChildren(
    ...rowsData.map(([name, value, fact]) => {
      const row = document.createElement("tr");
      row.innerHTML = "<th></th><td></td>";
      row.dataset.fact = fact;
      row.cells[0].textContent = name;
      row.cells[1].textContent = value;
      return row;
    }),
  );
}

function expiresIn() {
  if (expiresAt === null) return "never (no ttl)";
  return `${Math.max(0, (expiresAt - performance.now()) / 1000).toFixed(1)} s`;
}

// The countdown of the open key's ttl, between reloads.
function tickExpiry() {
  if (expiresAt === null) return;
  const cell = document.querySelector('#facts tr[data-fact="expires"] td');
  if (cell) cell.textContent = expiresIn();
}

// Who made the last change: the version of that revision in the server's history.
function changedBy(key, modRevision) {
  if (!keyHistory || keyHistory.key !== key) return "–";
  if (keyHistory.unsupported) return "not recorded by this server (no history op)";
  if (keyHistory.retention.versions === 0) return "not recorded: this server keeps no history (statehub serve --history N)";
  // By revision: the history, read after the facts, may hold a newer change already.
  const last = keyHistory.versions.find((v) => v.revision === modRevision);
  return last ? describeBy(last.by) : "not in the history this server kept";
}

// -- the history of one key: versions newest first, a diff of two, a plot of numbers ----

const HISTORY_LIMIT = 50; // versions asked for (the newest)
const DIFF_SHOWN = 200; // paths listed at most
const clientNames = new Map(); // session id -> client name, from list_sessions
let keyHistory = null; // {key, versions (newest first), retention} or {key, unsupported: true}
let diffPick = { key: null, from: null, to: null }; // revisions chosen for the diff
let historyPlot = null; // {key, plot}

async function fetchHistory(key) {
  try {
    const reply = await session.request("history", { key, limit: HISTORY_LIMIT, since: null });
    const versions = [...reply.versions].reverse();
    await learnClientNames(versions);
    return { key, versions, retention: reply.retention };
  } catch (error) {
    if (error instanceof RemoteError && /unknown op/.test(error.wire.message)) return { key, unsupported: true };
    throw error;
  }
}

function sessionOf(by) {
  const colon = typeof by === "string" ? by.indexOf(":") : -1;
  return colon < 0 ? null : { id: by.slice(0, colon), identity: by.slice(colon + 1) };
}

// History names a session by id: ask the server for the client names of the ones it serves
// (once per id: a session that ended before the page saw it stays unnamed).
const askedFor = new Set(); // session ids looked up
async function learnClientNames(versions) {
  const unknown = versions.map((v) => sessionOf(v.by)?.id).filter((id) => id && !clientNames.has(id) && !askedFor.has(id));
  if (unknown.length === 0) return;
  for (const id of unknown) askedFor.add(id);
  if (askedFor.size > 10_000) askedFor.clear();
  try {
    rememberSessions((await session.request("list_sessions")).sessions);
  } catch {
    // No names (an older server, or no admin right 'sessions'): ids and identities only.
  }
}

function rememberSessions(sessions) {
  for (const s of sessions) clientNames.set(s.session, s.client);
  while (clientNames.size > 10_000) clientNames.delete(clientNames.keys().next().value);
}

// `by` of a version: "<session>:<identity>", EXPIRY, SESSION_END, or an in-process owner.
function describeBy(by) {
  if (by === "EXPIRY") return "EXPIRY (its ttl ran out)";
  if (by === "SESSION_END") return "SESSION_END (the session it was bound to ended)";
  if (by === null || by === undefined) return "the server itself";
  const who = sessionOf(by);
  if (!who) return by;
  const name = clientNames.get(who.id);
  const session = `session ${who.id.slice(0, 8)}`;
  return name !== undefined ? `${name || "unnamed client"} (${who.identity}) · ${session}` : `identity ${who.identity} · ${session}`;
}

// 16:13:57.151 (local time; changes a few ms apart stay apart); the full date in its title.
function clockTime(seconds) {
  const at = new Date(seconds * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}.${String(at.getMilliseconds()).padStart(3, "0")}`;
}

function renderHistory() {
  const kept = keyHistory;
  const note = $("history-note");
  const table = $("history");
  $("history-retention").textContent = "";
  if (!kept || kept.unsupported || kept.retention.versions === 0) {
    table.hidden = true;
    $("history-diff").hidden = true;
    showHistoryPlot(null);
    note.textContent = kept?.unsupported
      ? "This server has no history of keys (no 'history' op in its session protocol)."
      : "This server keeps no history of keys. Start it with statehub serve --history N to keep each key's last N versions (value or removal, revision, time, who).";
    return;
  }
  const { retention, versions } = kept;
  $("history-retention").textContent =
    `(newest first; this server keeps the last ${plural(retention.versions, "version")} of each key` +
    `${retention.age ? `, none older than ${retention.age} s` : ""})`;
  note.textContent = versions.length === 0 ? "No version of this key is kept yet." : "";
  table.hidden = versions.length === 0;
  if (diffPick.key !== kept.key || !versions.some((v) => v.revision === diffPick.to)) {
    diffPick = { key: kept.key, from: versions[1]?.revision ?? null, to: versions[0]?.revision ?? null };
  } else if (!versions.some((v) => v.revision === diffPick.from)) {
    diffPick.from = versions[1]?.revision ?? null;
  }
  table.tBodies[0].replaceChildren(
    ...versions.map((version) => {
      const row = document.createElement("tr");
      row.dataset.revision = version.revision;
      row.innerHTML = '<td><input type="radio" name="diff-from"></td><td><input type="radio" name="diff-to"></td><td></td><td></td><td class="by"></td><td class="v"></td>';
      const [from, to] = row.querySelectorAll("input");
      from.checked = version.revision === diffPick.from;
      to.checked = version.revision === diffPick.to;
      from.title = `diff from revision ${version.revision}`;
      to.title = `diff to revision ${version.revision}`;
      from.onchange = () => {
        diffPick.from = version.revision;
        renderDiff();
      };
      to.onchange = () => {
        diffPick.to = version.revision;
        renderDiff();
      };
      row.cells[2].textContent = version.revision;
      row.cells[3].textContent = clockTime(version.time);
      row.cells[3].title = new Date(version.time * 1000).toISOString();
      row.cells[4].textContent = describeBy(version.by);
      row.cells[4].title = version.by ?? "";
      row.cells[5].textContent = version.removed ? "(removed)" : summarise(version.value);
      row.classList.toggle("removed", Boolean(version.removed));
      return row;
    }),
  );
  renderDiff();
  showHistoryPlot(kept);
}

function renderDiff() {
  const element = $("history-diff");
  const versions = keyHistory?.versions ?? [];
  const from = versions.find((v) => v.revision === diffPick.from);
  const to = versions.find((v) => v.revision === diffPick.to);
  element.hidden = versions.length === 0;
  if (!from || !to) {
    element.replaceChildren(Object.assign(document.createElement("p"), { className: "muted", textContent: "One version: nothing to compare yet." }));
    return;
  }
  const changes = jsonDiff(from.removed ? undefined : from.value, to.removed ? undefined : to.value);
  const title = Object.assign(document.createElement("p"), {
    className: "muted",
    textContent: `From revision ${from.revision} to revision ${to.revision}: ${changes.length === 0 ? "no difference" : plural(changes.length, "path")}`,
  });
  const list = document.createElement("ul");
  const sign = { changed: "~", added: "+", removed: "−" };
  for (const change of changes.slice(0, DIFF_SHOWN)) {
    const item = document.createElement("li");
    item.className = change.kind;
    item.dataset.path = change.path;
    const path = change.path === "" ? "(whole value)" : change.path;
    const text =
      change.kind === "changed"
        ? `${summarise(change.before)} → ${summarise(change.after)}`
        : summarise(change.kind === "added" ? change.after : change.before);
    item.textContent = `${sign[change.kind]} ${path}: ${text}`;
    list.append(item);
  }
  if (changes.length > DIFF_SHOWN) list.append(Object.assign(document.createElement("li"), { textContent: `… ${changes.length - DIFF_SHOWN} more` }));
  element.replaceChildren(title, list);
}

// The numeric versions over time, oldest to newest (removals and non-numbers left out).
function showHistoryPlot(kept) {
  const element = $("history-plot");
  const points = (kept?.versions ?? []).filter((v) => !v.removed && (typeof v.value === "number" || typeof v.value === "bigint")).reverse();
  element.dataset.points = points.length;
  if (points.length === 0) {
    historyPlot?.plot.destroy();
    historyPlot = null;
    element.replaceChildren();
    element.hidden = true;
    return;
  }
  element.hidden = false;
  const data = [points.map((v) => v.time), points.map((v) => Number(v.value))];
  if (historyPlot && historyPlot.key === kept.key) {
    historyPlot.plot.setData(data);
    fixTimeScale(historyPlot.plot, data[0]);
    return;
  }
  historyPlot?.plot.destroy();
  element.replaceChildren();
  const plot = new uPlot(
    lineOptions(element, Math.max(280, element.clientWidth || 400), 140, { label: "value", stroke: "#2f6ad0", width: 2, points: { show: true, size: 6 } }),
    data,
    element,
  );
  historyPlot = { key: kept.key, plot };
  fixTimeScale(plot, data[0]);
}

function describeLease([, mine, left, at, holder]) {
  const remaining = left === null ? "never expires" : `${Math.max(0, left - (performance.now() - at) / 1000).toFixed(1)} s left`;
  return `held by ${mine ? "this dashboard" : describeHolder(holder)}, ${remaining}`;
}

// A session as listings name it: client name, identity (when the viewer may see it), id.
function describeHolder(holder) {
  if (!holder) return "another client (not a session of this server)";
  // No session id: a session this identity may not see (list_locks, list_leases under --auth).
  if (!holder.session) return "another session";
  const name = holder.client || "unnamed client";
  const identity = holder.identity ? ` (${holder.identity})` : "";
  return `${name}${identity} · session ${String(holder.session).slice(0, 8)}`;
}

function since(seconds) {
  if (seconds === undefined || seconds === null) return "–";
  const ago = Math.max(0, Date.now() / 1000 - seconds);
  const at = new Date(seconds * 1000).toLocaleTimeString();
  return `${at} (${ago < 60 ? `${ago.toFixed(0)} s` : `${(ago / 60).toFixed(1)} min`} ago)`;
}

function parsedEditor() {
  try {
    return { ok: true, value: fromJSON($("write-value").value) };
  } catch (error) {
    return { ok: false, error: error.message };
  }
}

function validate() {
  const parsed = parsedEditor();
  const validation = $("validation");
  const preview = $("preview");
  if (!parsed.ok) {
    validation.textContent = `not valid JSON: ${parsed.error}`;
    validation.className = "result error";
    preview.replaceChildren();
  } else {
    validation.textContent = "valid JSON";
    validation.className = "result ok";
    const before = readValue === undefined ? "(absent)" : summarise(readValue);
    const after = summarise(parsed.value);
    preview.replaceChildren();
    if (before === after && readValue !== undefined) {
      preview.textContent = "no change";
    } else {
      const from = Object.assign(document.createElement("div"), { className: "before", textContent: `− ${before}` });
      const to = Object.assign(document.createElement("div"), { className: "after", textContent: `+ ${after}` });
      preview.append(from, to);
    }
  }
  updateDetailButtons();
}

function updateDetailButtons() {
  const key = $("write-key").value;
  const writable = key !== "" && may("write", key);
  $("save").disabled = !writable || !parsedEditor().ok;
  $("remove-key").disabled = !writable || readValue === undefined;
}

function conflictMessage(error, key) {
  const current = error.wire.details?.current ?? [];
  const now = current.find(([name]) => name === key)?.[1];
  if (now === null || now === undefined) return `refused: '${key}' was removed since you read it (at revision ${readRevision}); nothing applied`;
  if (readRevision === null) return `refused: '${key}' was created by someone else (revision ${now}); Reload to see it`;
  return `refused: '${key}' changed since you read it at revision ${readRevision} (now revision ${now}); nothing applied. Reload to see the current value`;
}

// Asks before anything is removed; resolves true if the viewer confirmed.
function confirmRemoval(text, keys, action = "Remove") {
  const dialog = $("confirm");
  $("confirm-ok").textContent = action;
  $("confirm-text").textContent = text;
  const shown = keys.slice(0, 8);
  $("confirm-list").replaceChildren(
    ...shown.map((key) => Object.assign(document.createElement("li"), { textContent: key })),
    ...(keys.length > shown.length ? [Object.assign(document.createElement("li"), { textContent: `… and ${keys.length - shown.length} more` })] : []),
  );
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "ok");
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function wireWriteForm() {
  $("write-value").oninput = validate;
  $("write-key").oninput = () => {
    readRevision = null;
    readValue = undefined;
    validate();
  };
  $("reload-key").onclick = () => loadKey($("write-key").value);
  $("new-key").onclick = () => {
    selectedKey = null;
    $("detail-empty").hidden = true;
    $("detail").hidden = false;
    $("detail-key").textContent = "(new)";
    $("write-key").value = $("prefix").value;
    $("write-value").value = "";
    readRevision = null;
    readValue = undefined;
    renderFacts("", null);
    $("history-block").hidden = true;
    validate();
    $("write-key").focus();
  };
  $("write-form").onsubmit = async (event) => {
    event.preventDefault();
    const key = $("write-key").value;
    const parsed = parsedEditor();
    if (!parsed.ok) {
      showResult($("write-result"), `not JSON: ${parsed.error}`, false);
      return;
    }
    try {
      const { revision } = await session.request("update", {
        updates: { [key]: parsed.value },
        removals: [],
        expect: { [key]: readRevision },
      });
      showResult($("write-result"), `set at revision ${revision}`, true);
      readRevision = revision;
      readValue = parsed.value;
      selectedKey = key;
      $("detail-key").textContent = key;
      validate();
      loadKey(key).catch(() => {});
    } catch (error) {
      const conflict = error instanceof RemoteError && error.wire.type === "ConflictError";
      showResult($("write-result"), conflict ? conflictMessage(error, key) : describeError(error), false);
    }
  };
  $("remove-key").onclick = async () => {
    const key = $("write-key").value;
    if (!(await confirmRemoval(`Remove 1 key?`, [key]))) {
      showResult($("write-result"), "not removed", true);
      return;
    }
    try {
      const { revision } = await session.request("update", { updates: {}, removals: [key], expect: { [key]: readRevision } });
      showResult($("write-result"), `removed '${key}' at revision ${revision}`, true);
      readRevision = null;
      readValue = undefined;
      renderFacts(key, null);
      validate();
    } catch (error) {
      const conflict = error instanceof RemoteError && error.wire.type === "ConflictError";
      const missing = conflict && (error.wire.details?.current ?? []).some(([name, now]) => name === key && now === null);
      showResult($("write-result"), missing ? `no key '${key}': nothing removed` : conflict ? conflictMessage(error, key) : describeError(error), false);
    }
  };
  $("bulk-remove").onclick = async () => {
    if (viewDirty || keysDirty) recompute();
    const keys = [...viewKeys];
    if (keys.length === 0) {
      showResult($("bulk-result"), "no key matches: nothing to remove", false);
      return;
    }
    const what = $("prefix").value || $("search").value ? "matching the filter" : "(every key shown)";
    if (!(await confirmRemoval(`Remove ${plural(keys.length, "key")} ${what}?`, keys))) {
      showResult($("bulk-result"), "not removed", true);
      return;
    }
    try {
      let revision = null;
      for (let start = 0; start < keys.length; start += 1000) {
        ({ revision } = await session.request("update", { updates: {}, removals: keys.slice(start, start + 1000) }));
      }
      showResult($("bulk-result"), `removed ${plural(keys.length, "key")} (revision ${revision})`, true);
    } catch (error) {
      showResult($("bulk-result"), describeError(error), false);
    }
  };
}

// The selected key changed on the server while the viewer looks at it: say so.
function onKeysChanged(batch) {
  const key = $("write-key").value;
  if ($("detail").hidden || key === "") return;
  const touched = key in batch.updates || batch.removals.includes(key) || batch.snapshot;
  if (!touched) return;
  const editing = parsedEditor().ok && readValue !== undefined && toJSON(parsedEditor().value) !== toJSON(readValue);
  if (!editing) {
    loadKey(key).catch(() => {});
  } else {
    showResult($("write-result"), `'${key}' changed on the server since you read it: Save will be refused; Reload to see it`, false);
  }
}

// -- leases --------------------------------------------------------------------------

async function pollLeases() {
  const reply = await session.request("list_leases");
  const now = performance.now();
  const holders = reply.holders ?? {};
  leases = reply.leases.map(([key, mine, left]) => [key, mine, left, now, holders[key] ?? null]);
  renderLeases();
}

function renderLeases() {
  const body = $("leases").tBodies[0];
  const now = performance.now();
  body.replaceChildren(
    ...leases.map(([key, mine, left, at, holder]) => {
      const row = document.createElement("tr");
      row.holder = holder;
      row.dataset.key = key;
      const remaining = left === null ? "never expires" : Math.max(0, left - (now - at) / 1000).toFixed(1);
      row.innerHTML = '<td class="key"></td><td></td><td class="countdown"></td><td></td>';
      row.cells[0].textContent = key;
      row.cells[1].textContent = mine ? "this dashboard" : describeHolder(row.holder);
      row.cells[2].textContent = remaining;
      if (mine) {
        const release = document.createElement("button");
        release.className = "secondary";
        release.textContent = "Release";
        release.onclick = async () => {
          await session.request("leases", { acquire: {}, release: [key] });
          await pollLeases();
        };
        row.cells[3].append(release);
      } else {
        row.cells[3].append(forceReleaseButton("lease", key, row.cells[1].textContent));
      }
      return row;
    }),
  );
}

function wireClearLeases() {
  $("clear-leases").onclick = async () => {
    const keys = leases.map(([key]) => key);
    if (!(await confirmRemoval(`Clear ${plural(keys.length, "lease")}, whichever session holds it?`, keys, "Clear"))) {
      showResult($("clear-result"), "not cleared", true);
      return;
    }
    try {
      await session.request("clear_leases");
      showResult($("clear-result"), "every lease cleared", true);
      await pollLeases();
    } catch (error) {
      showResult($("clear-result"), describeError(error), false);
    }
  };
}

function wireLeaseForm() {
  $("lease-form").onsubmit = async (event) => {
    event.preventDefault();
    const key = $("lease-key").value;
    const text = $("lease-seconds").value;
    const seconds = text === "" ? null : Number(text);
    try {
      await session.request("leases", { acquire: { [key]: seconds }, release: [] });
      showResult($("lease-result"), `leased ${key}`, true);
      await pollLeases();
    } catch (error) {
      showResult($("lease-result"), describeError(error), false);
    }
  };
}

// -- force release (admin right force_unlock) -----------------------------------------

// Takes a lock or lease away from whoever holds it; the server tells the holder, whose
// client sees the hold lost (it is not a silent theft), so the dialog says so.
function forceReleaseButton(kind, key, holder) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "danger admin force-release";
  button.dataset.admin = "force_unlock";
  button.dataset.key = key;
  button.textContent = "Force release…";
  applyAdminRight(button);
  const result = $(`${kind}-force-result`);
  button.onclick = async () => {
    const text = `Force-release the ${kind} on ${key}? Its holder is told it lost it.`;
    if (!(await confirmRemoval(text, [`held by ${holder}`], "Force release"))) {
      showResult(result, "not released", true);
      return;
    }
    try {
      const { released } = await session.request("force_release", { kind, key });
      const told = released.every((holding) => holding.told) ? "holder told" : "holder not told: not a session of this server";
      showResult(result, `${kind} on ${key} force-released (${told})`, true);
      await (kind === "lease" ? pollLeases() : pollLocksAndSessions());
    } catch (error) {
      showResult(result, describeError(error), false);
    }
  };
  return button;
}

// -- locks and sessions (ops a server may not have yet) ------------------------------

async function optionalOp(op, element, render) {
  try {
    render(await session.request(op));
  } catch (error) {
    const unknown = error instanceof RemoteError && /unknown op/.test(error.wire.message);
    element.innerHTML = "";
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = unknown
      ? `This server does not list these (no '${op}' op in its session protocol).`
      : describeError(error);
    element.append(note);
  }
}

function table(headers, rowsData) {
  const element = document.createElement("table");
  const head = element.createTHead().insertRow();
  for (const header of headers) head.append(Object.assign(document.createElement("th"), { textContent: header }));
  const body = element.createTBody();
  for (const cells of rowsData) {
    const row = body.insertRow();
    for (const cell of cells) row.insertCell().textContent = cell;
  }
  return element;
}

async function pollLocksAndSessions() {
  await optionalOp("list_locks", $("locks"), ({ locks }) => {
    const rowsData = [];
    const forceButtons = new Map(); // row index -> its Force release button
    for (const lock of locks) {
      // One button per lock, on its first holder's row: it takes every hold away.
      if (lock.holders.length) forceButtons.set(rowsData.length, forceReleaseButton("lock", lock.key, lock.holders.map(describeHolder).join(", ")));
      for (const h of lock.holders) {
        rowsData.push([lock.key, `holds (${lock.mode})`, describeHolder(h), h.owner ?? "", since(h.since), h.fence ?? "–"]);
      }
      for (const w of lock.waiters ?? []) {
        rowsData.push([lock.key, `waits (${w.mode})`, describeHolder(w), w.owner ?? "", since(w.since), ""]);
      }
      // A store that keeps its locks elsewhere (Redis) counts its waiters without naming them.
      if (!lock.waiters?.length && lock.waiting) rowsData.push([lock.key, `${lock.waiting} waiting`, "", "", "", ""]);
    }
    const note = Object.assign(document.createElement("p"), {
      className: "muted",
      textContent:
        "A lock is released by its holder or when its session ends. Force release (admin right " +
        "'force_unlock') takes every hold of it away and tells each holder; the waiters get it next.",
    });
    const listing = table(["key", "", "client (identity) · session", "owner", "since", "fencing token"], rowsData);
    // Under the mode of the first holder's row: no column of its own, so the table fits 1280 px.
    for (const [index, button] of forceButtons) listing.tBodies[0].rows[index].cells[1].append(document.createElement("br"), button);
    $("locks").replaceChildren(
      locks.length === 0 ? Object.assign(document.createElement("p"), { className: "muted", textContent: "none held" }) : listing,
      note,
    );
  });
  await optionalOp("list_sessions", $("sessions"), ({ sessions }) => {
    rememberSessions(sessions);
    $("sessions").replaceChildren(
      table(
        ["client", "transport", "peer", "subscriptions", ""],
        sessions.map((s) => [
          s.client,
          s.transport ?? "",
          s.peer,
          s.subscriptions,
          s.you ? "(this dashboard)" : "",
        ]),
      ),
    );
  });
}

// -- commands ------------------------------------------------------------------------

async function loadCommands() {
  const reply = await session.request("commands");
  const { commands } = reply;
  const signatures = reply.arguments ?? {};
  const container = $("commands");
  container.replaceChildren();
  for (const name of Object.keys(commands).sort()) {
    const block = document.createElement("form");
    block.className = "command";
    block.dataset.command = name;
    block.innerHTML = '<div class="row"><b class="name"></b><button type="submit" class="call">Run</button></div><div class="args"></div><pre class="result"></pre>';
    block.querySelector(".name").textContent = name;
    const args = signatures[name] ?? Object.entries(commands[name]).map(([arg, value]) => [arg, false, value]);
    const fields = block.querySelector(".args");
    for (const [arg, required, value] of args) {
      const label = document.createElement("label");
      label.className = "arg";
      label.innerHTML = "<span></span><input autocomplete=\"off\">";
      label.firstChild.textContent = required ? `${arg} *` : arg;
      const input = label.lastChild;
      input.name = arg;
      input.dataset.required = required;
      input.placeholder = required ? "required (JSON, or plain text)" : "default (JSON, or plain text)";
      if (!required && value !== null && value !== undefined) input.value = toJSON(value);
      fields.append(label);
    }
    if (args.length === 0) fields.append(Object.assign(document.createElement("span"), { className: "muted", textContent: "no arguments" }));
    const result = block.querySelector(".result");
    block.onsubmit = async (event) => {
      event.preventDefault();
      const given = {};
      for (const input of fields.querySelectorAll("input")) {
        const text = input.value.trim();
        if (text === "") {
          if (input.dataset.required === "true") {
            showResult(result, `'${input.name}' is required`, false);
            return;
          }
          continue;
        }
        try {
          given[input.name] = JSON.parse(text);
        } catch {
          given[input.name] = text; // plain text: a string
        }
      }
      try {
        showResult(result, toJSON(await session.call(name, given), 2), true);
      } catch (error) {
        showResult(result, describeError(error), false);
      }
    };
    container.append(block);
  }
  applyRights();
  return commands;
}

// -- live tail -------------------------------------------------------------------------

const TAIL_KEPT = 500;
const TAIL_SHOWN = 100;
let tail = []; // newest last: [time, revision, key, summary or null (removed)]
let tailDirty = false;

function recordTail(batch) {
  if (batch.snapshot || $("tail-pause").checked) return;
  const now = new Date().toLocaleTimeString();
  for (const [key, value] of Object.entries(batch.updates)) tail.push([now, batch.revision, key, value]);
  for (const key of batch.removals) tail.push([now, batch.revision, key, undefined]);
  if (tail.length > TAIL_KEPT * 2) tail = tail.slice(-TAIL_KEPT);
  tailDirty = true;
}

function renderTail() {
  if (!tailDirty) return;
  tailDirty = false;
  const prefix = $("tail-prefix").value;
  const shown = [];
  for (let index = tail.length - 1; index >= 0 && shown.length < TAIL_SHOWN; index--) {
    if (tail[index][2].startsWith(prefix)) shown.push(tail[index]);
  }
  $("tail-count").textContent = $("tail-pause").checked ? "paused" : `${shown.length} shown`;
  $("tail").tBodies[0].replaceChildren(
    ...shown.map(([time, revision, key, value]) => {
      const row = document.createElement("tr");
      row.innerHTML = '<td></td><td></td><td class="key"></td><td class="v"></td>';
      row.cells[0].textContent = time;
      row.cells[1].textContent = revision;
      row.cells[2].textContent = key;
      row.cells[3].textContent = value === undefined ? "(removed)" : summarise(value);
      return row;
    }),
  );
}

function wireTail() {
  $("tail-prefix").oninput = () => {
    tailDirty = true;
    renderTail();
  };
  $("tail-pause").onchange = () => {
    tailDirty = true;
    renderTail();
  };
  setInterval(renderTail, 250);
}

// -- health: the server's own figures from /metrics --------------------------------------

let lastFigures = null;

function parseMetrics(text) {
  const sums = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match) sums.set(match[1], (sums.get(match[1]) ?? 0) + Number(match[3]));
  }
  return sums;
}

async function pollHealth() {
  // Under --auth, /metrics and /readyz need the admin right `metrics`: the page sends the
  // token it signed in with (same origin: a fetch may carry the header a WebSocket cannot).
  const credential = sessionStorage.getItem(CREDENTIAL_KEY);
  const headers = credential ? { Authorization: `Bearer ${credential}` } : {};
  const [metricsResponse, readyResponse] = await Promise.all([
    fetch("/metrics", { headers }),
    fetch("/readyz", { headers }),
  ]);
  if (metricsResponse.status === 401 || metricsResponse.status === 403) {
    const why = (await metricsResponse.text()).trim();
    showHealthRows([["figures", `not shown to this identity (${why})`]]);
    return;
  }
  const metrics = await metricsResponse.text();
  const ready = [readyResponse.status, await readyResponse.json().catch(() => ({ status: "?" }))];
  const figures = parseMetrics(metrics);
  const now = performance.now();
  const rows = [
    ["ready", ready[0] === 200 ? "ready" : `${ready[0]}: ${ready[1].status}`],
    ["sessions", figures.get("statehub_sessions") ?? "–"],
    ["subscriptions", figures.get("statehub_subscriptions") ?? "–"],
    ["revision", figures.get("statehub_revision") ?? "–"],
  ];
  if (lastFigures) {
    const seconds = (now - lastFigures.at) / 1000;
    const rate = (name) => ((figures.get(name) ?? 0) - (lastFigures.figures.get(name) ?? 0)) / seconds;
    rows.push(["commits/s", rate("statehub_revision").toFixed(1)]);
    rows.push(["sent to clients", `${(rate("statehub_sent_bytes_total") / 1024).toFixed(1)} KiB/s`]);
    const lagCount = rate("statehub_event_loop_lag_seconds_count");
    const lag = lagCount > 0 ? rate("statehub_event_loop_lag_seconds_sum") / lagCount : figures.get("statehub_event_loop_lag_seconds");
    if (lag !== undefined && !Number.isNaN(lag)) rows.push(["event loop lag", `${(lag * 1000).toFixed(2)} ms`]);
  }
  rows.push(["leases / locks held", `${figures.get("statehub_leases") ?? "–"} / ${figures.get("statehub_rwlocks_held") ?? "–"}`]);
  lastFigures = { at: now, figures };
  showHealthRows(rows);
}

function showHealthRows(rows) {
  $("health").tBodies[0].replaceChildren(
    ...rows.map(([name, value]) => {
      const row = document.createElement("tr");
      row.innerHTML = "<th></th><td></td>";
      row.dataset.figure = name;
      row.cells[0].textContent = name;
      row.cells[1].textContent = value;
      return row;
    }),
  );
}

// -- endpoints -----------------------------------------------------------------------

const plots = new Map();

async function pollEndpoints() {
  const { endpoints } = await session.call("endpoint.list");
  $("endpoints-section").hidden = false;
  const container = $("endpoints");
  for (const address of endpoints) {
    let block = container.querySelector(`[data-endpoint="${CSS.escape(address)}"]`);
    if (!block) {
      block = document.createElement("div");
      block.className = "endpoint";
      block.dataset.endpoint = address;
      block.innerHTML = '<div class="row"><b></b><span class="lockout"></span></div><div class="values"></div><div class="plot"></div>';
      block.querySelector("b").textContent = address;
      container.append(block);
    }
    const [reading, lock, history] = await Promise.all([
      session.call("endpoint.get", { address }),
      session.call("endpoint.get", { address, specifier: "is-locked" }),
      session.call("endpoint.history", { address, since: null, limit: 1000 }),
    ]);
    block.querySelector(".values").textContent =
      `raw ${JSON.stringify(reading.value_raw)}   calibrated ${JSON.stringify(reading.value_cal)}`;
    const lockout = block.querySelector(".lockout");
    lockout.textContent = lock.is_locked ? `locked${lock.tag ? ` (${lock.tag})` : ""}` : "unlocked";
    lockout.className = `lockout ${lock.is_locked ? "locked" : "unlocked"}`;
    plotHistory(block.querySelector(".plot"), address, history.events);
  }
}

// uPlot stretches the time axis of a single instant over years: show a minute around it.
function fixTimeScale(plot, times) {
  const first = times[0];
  const last = times[times.length - 1];
  if (last - first < 1) plot.setScale("x", { min: first - 30, max: last + 30 });
}

// One series over time with fixed, sane scales: a flat value gets a band around it, a
// single instant a minute (fixTimeScale); element.dataset.span is the seconds shown.
function lineOptions(element, width, height, series) {
  return {
    width,
    height,
    series: [{}, series],
    scales: {
      y: { range: (u, min, max) => (max - min < 1e-9 ? [min - Math.max(1, Math.abs(min) * 0.1), max + Math.max(1, Math.abs(max) * 0.1)] : [min, max]) },
    },
    axes: [{}, { size: 50 }],
    legend: { show: true },
    hooks: {
      setScale: [(u, key) => key === "x" && (element.dataset.span = u.scales.x.max - u.scales.x.min)],
    },
  };
}

function plotHistory(element, address, events) {
  const numeric = events.filter((e) => typeof e.value_cal === "number");
  element.dataset.points = numeric.length;
  if (numeric.length === 0) {
    element.innerHTML = `<span class="muted">${events.length ? "logged values are not numbers: nothing to plot" : "no logged values yet"}</span>`;
    plots.delete(address);
    return;
  }
  const data = [numeric.map((e) => e.time), numeric.map((e) => e.value_cal)];
  const existing = plots.get(address);
  if (existing) {
    existing.setData(data);
    fixTimeScale(existing, data[0]);
    return;
  }
  element.replaceChildren();
  const width = Math.max(300, element.clientWidth || 400);
  const plot = new uPlot(
    lineOptions(element, width, 160, { label: "calibrated", stroke: "#2f6ad0", width: 2, points: { show: true, size: 5 } }),
    data,
    element,
  );
  plots.set(address, plot);
  fixTimeScale(plot, data[0]);
}

// -- start ---------------------------------------------------------------------------

function every(ms, task) {
  const run = async () => {
    try {
      await task();
    } catch (error) {
      console.warn(error);
    }
    setTimeout(run, ms);
  };
  run();
}

// A browser cannot put an Authorization header on a WebSocket, so the token travels in
// hello's credential. sessionStorage keeps it for this tab only: closing the tab signs out.
const CREDENTIAL_KEY = "statehub.credential";

function offerSignIn(reason) {
  $("signin").hidden = false;
  $("signin-reason").textContent = reason;
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(CREDENTIAL_KEY, $("signin-token").value);
    location.reload();
  });
}

function showIdentity(identity, signedIn) {
  if (signedIn) {
    $("identity").textContent = `signed in as ${identity}`;
    $("signout").hidden = false;
    $("signout").addEventListener("click", () => {
      sessionStorage.removeItem(CREDENTIAL_KEY);
      location.reload();
    });
  } else if (identity === "anonymous") {
    $("identity").textContent = "anonymous";
    offerSignIn("");
  }
}

async function openSession() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/v1/session`;
  const credential = sessionStorage.getItem(CREDENTIAL_KEY);
  session = new Session(url, "dashboard", credential);
  try {
    const hello = await session.open();
    showIdentity(hello.identity, credential !== null);
    return hello;
  } catch (error) {
    if (!(error instanceof RemoteError && error.wire.status === "UNAUTHENTICATED")) throw error;
    sessionStorage.removeItem(CREDENTIAL_KEY);
    offerSignIn(credential === null ? "this server wants a token" : describeError(error));
    throw error;
  }
}

async function start() {
  const hello = await openSession();
  session.onclose = () => {
    $("status").textContent = "disconnected: reload to reconnect";
    $("status").className = "status down";
  };
  $("status").textContent = "live";
  $("status").className = "status live";
  $("epoch").textContent = `epoch ${String(hello.epoch).slice(0, 8)}`;
  wireBrowser();
  wireWriteForm();
  wireLeaseForm();
  wireClearLeases();
  wireTail();
  wireReadOnly(hello);
  await subscribeState();
  const commands = await loadCommands();
  every(POLL_INTERVAL, pollLeases);
  every(POLL_INTERVAL, pollLocksAndSessions);
  setInterval(() => {
    renderLeases();
    tickExpiry();
  }, 100);
  if ("endpoint.list" in commands) every(ENDPOINT_POLL_INTERVAL, pollEndpoints);
  every(2000, pollHealth);
  every(5000, loadCommandsIfChanged(commands));
}

function loadCommandsIfChanged(initial) {
  let known = JSON.stringify(Object.keys(initial).sort());
  return async () => {
    const { commands } = await session.request("commands");
    const names = JSON.stringify(Object.keys(commands).sort());
    if (names !== known) {
      known = names;
      await loadCommands();
    }
  };
}

start().catch((error) => {
  $("status").textContent = $("signin").hidden
    ? `cannot connect: ${describeError(error)}`
    : "sign in to connect";
  $("status").className = "status down";
});
