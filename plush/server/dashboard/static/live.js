// The live log: past turns from /api/turns, new ones from the server-sent events of /api/stream, newest first.
// Every value goes in with textContent, never innerHTML: what someone said is always shown as text.
"use strict";
const form = document.getElementById("filters");
const body = document.getElementById("turns");
const badge = document.getElementById("live");
const more = document.getElementById("more");
const empty = document.getElementById("empty");
let source = null;
let oldest = null;

function params(extra) {
  const data = new URLSearchParams();
  for (const [key, value] of new FormData(form)) if (value) data.set(key, value);
  for (const [key, value] of Object.entries(extra || {})) if (value !== null && value !== undefined) data.set(key, value);
  return data;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function when(epoch) {
  const d = new Date(epoch * 1000);
  return new Date().toDateString() === d.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function row(turn, fresh) {
  const tr = document.createElement("tr");
  tr.dataset.turn = turn.id;
  if (turn.error || turn.outcome === "error" || turn.outcome === "refused") tr.classList.add("error");
  if (fresh) tr.classList.add("fresh");
  cell(tr, when(turn.started_at));
  cell(tr, turn.source);
  cell(tr, turn.device_id);
  cell(tr, turn.user_text, "text said");
  const reply = cell(tr, turn.reply_text, "text reply");
  if (turn.error) {
    const err = document.createElement("div");
    err.className = "small problem";
    err.textContent = turn.error;
    reply.appendChild(err);
  }
  const brain = cell(tr, (turn.backend || "—") + (turn.backend_reason ? " · " + turn.backend_reason : ""));
  if (turn.outcome !== "answered") {
    const badge = document.createElement("span");
    badge.className = "outcome " + turn.outcome;
    badge.textContent = turn.outcome + (turn.ending ? " · " + turn.ending.replaceAll("_", " ") : "");
    brain.append(" ", badge);
  }
  if (turn.safety) {
    const flag = document.createElement("span");
    flag.className = "outcome blocked flag";
    flag.title = "What the child-safety check found";
    flag.textContent = turn.safety.replace(":", " · ").replace("_", " ");
    brain.append(" ", flag);
  }
  const t = turn.timings || {};
  const first = t.first_audio ?? t.llm_first_token;
  cell(tr, (first !== undefined ? Math.round(first) + " ms first · " : "") + (t.total !== undefined ? Math.round(t.total) + " ms" : ""));
  tr.addEventListener("click", () => { window.location.href = "/turns/" + encodeURIComponent(turn.id); });
  return tr;
}

async function load(reset) {
  if (reset) { body.replaceChildren(); oldest = null; }
  const response = await fetch("/api/turns?" + params({ before: oldest, limit: 50 }), { headers: { accept: "application/json" } });
  if (response.status === 401) { window.location.href = "/login"; return; }
  const turns = await response.json();
  for (const turn of turns) { body.appendChild(row(turn, false)); oldest = turn.rowid; }
  more.hidden = turns.length < 50;
  empty.hidden = body.children.length > 0;
  if (reset) listen(turns.length ? turns[0].rowid : null);
}

function listen(after) {
  if (source) source.close();
  const query = params(after !== null ? { after } : {});
  source = new EventSource("/api/stream?" + query);
  source.addEventListener("ready", () => { badge.textContent = "● live"; badge.className = "live on"; });
  source.addEventListener("turn", (event) => {
    const turn = JSON.parse(event.data);
    // A turn shown while under way (stored as interrupted until it ends) is replaced by the turn as it ended.
    body.querySelector(`tr[data-turn="${CSS.escape(turn.id)}"]`)?.remove();
    body.prepend(row(turn, true));
    empty.hidden = true;
  });
  source.addEventListener("end", () => { source.close(); window.location.href = "/login"; });
  source.onerror = () => { badge.textContent = "reconnecting…"; badge.className = "live off"; };
}

let typing = null;
form.addEventListener("input", (event) => {
  clearTimeout(typing);
  typing = setTimeout(() => load(true), event.target.name === "q" ? 300 : 0);
});
form.addEventListener("submit", (event) => { event.preventDefault(); load(true); });
more.addEventListener("click", () => load(false));
load(true);
