// pvtt review: keyboard-first labelling of pairs. Talks only to the server that served it.
// Keys: A accept, 1-7 reject with that reason, S skip, U (or Backspace) undo, W save,
// Space play/pause. Keys are handled one at a time, in order: a key pressed while the
// server answers the previous one waits its turn. <body data-busy> counts keys not yet
// handled, so a test (or a person) can tell when the page has caught up.
"use strict";

const KINDS = ["source", "masks", "background", "synth"];
const state = { pairs: [], index: 0, history: [], reasons: [], threshold: 0, verdicts: {} };
let pendingKeys = 0;
let chain = Promise.resolve();

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text) { $("status").textContent = text; }

function showState(s) {
  $("pending").textContent = s.pending;
  $("version").textContent = s.version === null ? "none yet" : s.version;
  document.body.dataset.pending = s.pending;
  document.body.dataset.version = s.version === null ? "" : s.version;
}

function fmt(value) { return value === null || value === undefined ? "n/a" : value.toFixed(3); }

function cell(row, head, value, cls) {
  const tr = row.insertRow();
  const th = document.createElement("th");
  th.textContent = head;
  tr.appendChild(th);
  const td = tr.insertCell();
  td.textContent = value;
  if (cls) td.className = cls;
}

function show() {
  const done = state.index >= state.pairs.length;
  document.body.classList.toggle("finished", done);
  document.body.dataset.index = state.index;
  $("position").textContent = `${Math.min(state.index + 1, state.pairs.length)} / ${state.pairs.length}`;
  if (done) {
    for (const kind of KINDS) $(kind).pause();
    document.body.dataset.pair = "";
    return;
  }
  const pair = state.pairs[state.index];
  document.body.dataset.pair = pair.pair_id;
  const id = encodeURIComponent(pair.pair_id);
  for (const kind of KINDS) {
    $(`fig-${kind}`).classList.remove("missing");
    $(kind).src = `/media/${kind}/${id}`;
  }
  $("fig-target").classList.remove("missing");
  $("target").src = `/media/target/${id}`;

  const verdict = $("verdict");
  verdict.replaceChildren();
  const gate = document.createElement("span");
  gate.className = pair.passed ? "pass" : "fail";
  gate.textContent = pair.passed ? "gate: passed" : `gate: rejected (${pair.reject_reason || "no reason"})`;
  verdict.appendChild(gate);
  const mine = state.verdicts[pair.pair_id] || pair.previous;
  if (mine) {
    const note = document.createElement("span");
    note.textContent = ` · labelled before: ${mine.label}${mine.reason ? " (" + mine.reason + ")" : ""}`;
    verdict.appendChild(note);
  }

  const about = $("about");
  about.replaceChildren();
  cell(about, "pair", pair.pair_id);
  cell(about, "difficulty", pair.difficulty);
  cell(about, "source", `${pair.source_category} / ${pair.source_subcategory}`);
  cell(about, "target", `${pair.target_category} / ${pair.target_subcategory}`);
  const near = pair.quality_score !== null && Math.abs(pair.quality_score - state.threshold) < 0.05;
  cell(about, "quality", `${fmt(pair.quality_score)} vs ${state.threshold.toFixed(3)}`, near ? "near" : "");

  const scores = $("scores");
  scores.replaceChildren();
  for (const [name, value] of Object.entries(pair)) {
    if (name.startsWith("score_")) cell(scores, name.slice(6), fmt(value));
  }
}

function step(delta) {
  state.index = Math.max(0, Math.min(state.pairs.length, state.index + delta));
  show();
}

async function label(label, reason) {
  if (state.index >= state.pairs.length) return say("nothing left to label");
  const pair = state.pairs[state.index];
  showState(await api("/api/label", { pair_id: pair.pair_id, label, reason }));
  state.verdicts[pair.pair_id] = { label, reason };
  state.history.push({ type: "label", index: state.index, pair: pair.pair_id });
  say(`${pair.pair_id}: ${label}${reason ? " (" + reason + ")" : ""}`);
  step(1);
}

function skip() {
  if (state.index >= state.pairs.length) return say("nothing left to skip");
  state.history.push({ type: "skip", index: state.index });
  step(1);
}

async function undo() {
  const last = state.history.pop();
  if (!last) return say("nothing to undo");
  if (last.type === "label") {
    try {
      const answer = await api("/api/undo", {});
      showState(answer);
      delete state.verdicts[answer.undone];
    } catch (error) {
      state.history.push(last);
      throw error;
    }
  }
  state.index = last.index;
  say(`undone: ${last.type} of pair ${last.index + 1}`);
  show();
}

async function save() {
  const answer = await api("/api/save", {});
  showState(answer);
  state.history = state.history.filter((h) => h.type !== "label");  // saved verdicts stay
  say(`saved: labels version ${answer.version}`);
}

function playPause() {
  const master = $("synth");
  if (master.paused) master.play().catch(() => {}); else master.pause();
}

function keepInStep() {
  const master = $("synth");
  for (const kind of KINDS) {
    if (kind === "synth") continue;
    const video = $(kind);
    if (video.readyState > 0 && Math.abs(video.currentTime - master.currentTime) > 0.08) {
      video.currentTime = Math.min(master.currentTime, video.duration || master.currentTime);
    }
  }
}

function action(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return null;
  const key = event.key.toLowerCase();
  const n = Number.parseInt(key, 10);
  if (n >= 1 && n <= state.reasons.length) return () => label("reject", state.reasons[n - 1]);
  return {
    a: () => label("accept", null), enter: () => label("accept", null),
    s: skip, u: undo, backspace: undo, w: save, " ": playPause,
  }[key] || null;
}

document.addEventListener("keydown", (event) => {
  const run = action(event);
  if (!run) return;
  event.preventDefault();
  pendingKeys += 1;
  document.body.dataset.busy = pendingKeys;
  chain = chain.then(run).catch((error) => say(`error: ${error.message}`)).finally(() => {
    pendingKeys -= 1;
    document.body.dataset.busy = pendingKeys;
  });
});

async function start() {
  const queue = await api("/api/queue");
  Object.assign(state, { pairs: queue.pairs, reasons: queue.reasons, threshold: queue.threshold });
  $("reviewer").textContent = queue.reviewer;
  $("threshold").textContent = queue.threshold.toFixed(3);
  $("reason-keys").replaceChildren(...queue.reasons.flatMap((reason, i) => {
    const kbd = document.createElement("kbd");
    kbd.textContent = String(i + 1);
    return [kbd, ` reject: ${reason}  `];
  }));
  for (const kind of KINDS) {
    $(kind).addEventListener("error", () => $(`fig-${kind}`).classList.add("missing"));
  }
  $("target").addEventListener("error", () => $("fig-target").classList.add("missing"));
  const master = $("synth");
  master.addEventListener("loadeddata", () => master.play().catch(() => {}));
  master.addEventListener("play", () => KINDS.forEach((k) => $(k).play().catch(() => {})));
  master.addEventListener("pause", () => KINDS.forEach((k) => $(k).pause()));
  master.addEventListener("seeked", keepInStep);
  master.addEventListener("timeupdate", keepInStep);
  window.addEventListener("pagehide", () => {
    fetch("/api/save", { method: "POST", keepalive: true,
      headers: { "Content-Type": "application/json" }, body: "{}" });
  });
  showState(queue);
  if (!state.pairs.length) say("no pair matches the filters (or every one is labelled)");
  show();
  document.body.dataset.ready = "1";
}

start().catch((error) => say(`cannot load the queue: ${error.message}`));
