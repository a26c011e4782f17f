// statehub's dashboard: a live view of one server over the session protocol.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { RemoteError, Session } from "./session.js";

const $ = (id) => document.getElementById(id);
const SUBSCRIPTION_INTERVAL = 0.1; // s: at most 10 updates a second are plenty for a person
const POLL_INTERVAL = 1000; // ms: leases, locks, sessions
const ENDPOINT_POLL_INTERVAL = 2000; // ms: endpoint values and history
const MAX_ROWS = 2000;

const state = new Map();
let session;
let stateSub = null;
let leases = []; // [key, mine, secondsLeft, fetchedAt]

function describeError(error) {
  return error instanceof RemoteError ? error.wire.message : String(error.message ?? error);
}

function showResult(element, text, ok) {
  element.textContent = text;
  element.className = `result ${ok ? "ok" : "error"}`;
}

// -- values ------------------------------------------------------------------------

function renderValue(value, depth = 0) {
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const details = document.createElement("details");
    details.open = depth === 0 && entries.length <= 4;
    const summary = document.createElement("summary");
    summary.textContent = Array.isArray(value) ? `[${entries.length} items]` : `{${entries.length} keys}`;
    details.append(summary);
    for (const [name, item] of entries) {
      const line = document.createElement("div");
      line.className = "nested";
      line.append(`${name}: `);
      line.append(renderValue(item, depth + 1));
      details.append(line);
    }
    return details;
  }
  const span = document.createElement("span");
  span.textContent = typeof value === "bigint" ? `${value}` : JSON.stringify(value);
  return span;
}

// -- state ---------------------------------------------------------------------------

const rows = new Map();

function renderState(changed) {
  const prefix = $("prefix").value;
  const body = $("state").tBodies[0];
  const keys = [...state.keys()].filter((k) => k.startsWith(prefix)).sort();
  $("key-count").textContent = `(${keys.length} of ${state.size} keys)`;
  const wanted = new Set(keys.slice(0, MAX_ROWS));
  for (const [key, row] of rows) {
    if (!wanted.has(key)) {
      row.remove();
      rows.delete(key);
    }
  }
  let previous = null;
  for (const key of wanted) {
    let row = rows.get(key);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.key = key;
      row.innerHTML = '<td class="key"></td><td class="value"></td>';
      row.cells[0].textContent = key;
      row.cells[0].title = "click to edit";
      row.cells[0].onclick = () => {
        $("write-key").value = key;
        $("write-value").value = JSON.stringify(state.get(key));
      };
      rows.set(key, row);
      changed = null; // force the value in
    }
    if (changed === null || changed.has(key) || !row.cells[1].firstChild) {
      row.cells[1].replaceChildren(renderValue(state.get(key)));
      if (changed?.has(key)) {
        row.classList.remove("flash");
        void row.offsetWidth;
        row.classList.add("flash");
      }
    }
    const expected = previous ? previous.nextSibling : body.firstChild;
    if (expected !== row) body.insertBefore(row, expected);
    previous = row;
  }
}

function applyBatch(batch) {
  if (batch.snapshot) state.clear();
  const changed = new Set();
  for (const [key, value] of Object.entries(batch.updates)) {
    state.set(key, value);
    changed.add(key);
  }
  for (const key of batch.removals) {
    state.delete(key);
    changed.add(key);
  }
  $("revision").textContent = batch.revision;
  renderState(batch.snapshot ? null : changed);
}

async function subscribeState() {
  if (stateSub !== null) await session.unsubscribe(stateSub);
  stateSub = await session.subscribe("", SUBSCRIPTION_INTERVAL, applyBatch);
}

function wireWriteForm() {
  $("write-form").onsubmit = async (event) => {
    event.preventDefault();
    const key = $("write-key").value;
    let value;
    try {
      value = JSON.parse($("write-value").value);
    } catch (error) {
      showResult($("write-result"), `not JSON: ${error.message}`, false);
      return;
    }
    try {
      const { revision } = await session.request("update", { updates: { [key]: value }, removals: [] });
      showResult($("write-result"), `set at revision ${revision}`, true);
    } catch (error) {
      showResult($("write-result"), describeError(error), false);
    }
  };
  $("remove-key").onclick = async () => {
    try {
      const key = $("write-key").value;
      const { revision } = await session.request("update", { updates: {}, removals: [key] });
      showResult($("write-result"), `removed at revision ${revision}`, true);
    } catch (error) {
      showResult($("write-result"), describeError(error), false);
    }
  };
  $("prefix").oninput = () => renderState(null);
}

// -- leases --------------------------------------------------------------------------

async function pollLeases() {
  const reply = await session.request("list_leases");
  const now = performance.now();
  leases = reply.leases.map(([key, mine, left]) => [key, mine, left, now]);
  renderLeases();
}

function renderLeases() {
  const body = $("leases").tBodies[0];
  const now = performance.now();
  body.replaceChildren(
    ...leases.map(([key, mine, left, at]) => {
      const row = document.createElement("tr");
      row.dataset.key = key;
      const remaining = left === null ? "never expires" : Math.max(0, left - (now - at) / 1000).toFixed(1);
      row.innerHTML = '<td class="key"></td><td></td><td class="countdown"></td><td></td>';
      row.cells[0].textContent = key;
      row.cells[1].textContent = mine ? "this dashboard" : "another session";
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
        row.cells[3].innerHTML = '<span class="muted" title="the session protocol lets only the owner release a lease">owner only</span>';
      }
      return row;
    }),
  );
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
    $("locks").replaceChildren(
      locks.length === 0
        ? Object.assign(document.createElement("p"), { className: "muted", textContent: "none held" })
        : table(
            ["key", "mode", "holders", "waiting"],
            locks.map((lock) => [
              lock.key,
              lock.mode,
              lock.holders.map((h) => h.client || h.session.slice(0, 8)).join(", "),
              lock.waiting,
            ]),
          ),
    );
  });
  await optionalOp("list_sessions", $("sessions"), ({ sessions }) => {
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
  const { commands } = await session.request("commands");
  const container = $("commands");
  container.replaceChildren();
  for (const name of Object.keys(commands).sort()) {
    const block = document.createElement("form");
    block.className = "command";
    block.dataset.command = name;
    block.innerHTML = '<div class="row"><b class="name"></b><button type="submit">Run</button></div><textarea></textarea><div class="result"></div>';
    block.querySelector(".name").textContent = name;
    const argumentsBox = block.querySelector("textarea");
    argumentsBox.value = JSON.stringify(commands[name]);
    const result = block.querySelector(".result");
    block.onsubmit = async (event) => {
      event.preventDefault();
      let args;
      try {
        args = JSON.parse(argumentsBox.value || "{}");
      } catch (error) {
        showResult(result, `arguments are not JSON: ${error.message}`, false);
        return;
      }
      try {
        showResult(result, JSON.stringify(await session.call(name, args)), true);
      } catch (error) {
        showResult(result, describeError(error), false);
      }
    };
    container.append(block);
  }
  return commands;
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
    return;
  }
  element.replaceChildren();
  const width = Math.max(300, element.clientWidth || 400);
  const plot = new uPlot(
    {
      width,
      height: 160,
      series: [{}, { label: "calibrated", stroke: "#2f6ad0", width: 2, points: { show: true, size: 5 } }],
      axes: [{}, { size: 50 }],
      legend: { show: true },
    },
    data,
    element,
  );
  plots.set(address, plot);
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
  wireWriteForm();
  wireLeaseForm();
  await subscribeState();
  const commands = await loadCommands();
  every(POLL_INTERVAL, pollLeases);
  every(POLL_INTERVAL, pollLocksAndSessions);
  setInterval(renderLeases, 100);
  if ("endpoint.list" in commands) every(ENDPOINT_POLL_INTERVAL, pollEndpoints);
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
