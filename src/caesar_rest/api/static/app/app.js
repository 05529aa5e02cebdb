// caesar-rest web application: plain ES module, no build step, every asset from the service.
import { createViewer } from "./viewer.js";
import * as samp from "./samp.js";
import * as auth from "./auth.js";
import * as tus from "./tus.js";

const API = new URL("../caesar/api/v1.0/", document.baseURI).href;
const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
};
const state = { apps: [], files: [], jobs: [], job: null, timer: null, jobPages: 1, jobsBusy: false, formGen: 0 };
// Page size of the job list; files above `resumableAbove` bytes go by tus in `chunkSize`
// chunks. A page (or a test) may set window.caesarSettings before this module runs.
const MiB = 1024 * 1024;
const settings = { jobPage: 100, resumableAbove: 16 * MiB, chunkSize: 8 * MiB, ...(window.caesarSettings || {}) };

async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}), ...auth.headers() };
  const r = await fetch(API + path, { credentials: "same-origin", ...opts, headers });
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) { const err = new Error((body && body.status) || r.statusText); err.body = body; throw err; }
  return body;
}

async function fetchBlob(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: auth.headers() });
  if (!r.ok) throw new Error(r.statusText);
  return r.blob();
}
/** The `rel="next"` URL of a Link header (RFC 8288), or null. */
export function nextLink(header) {
  for (const part of (header || "").split(",")) {
    const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(part);
    if (m) return new URL(m[1], API).href;
  }
  return null;
}
/** The caller's newest jobs: `jobs?order=desc&limit=N`, then up to `pages - 1` more pages
 * from the Link headers (keyset cursors); `more` tells whether there is a next page. */
async function listJobs(pages = 1) {
  let url = API + `jobs?order=desc&limit=${settings.jobPage}`, more = false;
  const jobs = [];
  for (let i = 0; i < pages && url; i++) {
    const r = await fetch(url, { credentials: "same-origin", headers: auth.headers() });
    if (!r.ok) throw new Error(r.statusText);
    const body = await r.json();
    jobs.push(...(Array.isArray(body) ? body : body.jobs || []));
    url = nextLink(r.headers.get("Link"));
    more = url != null;
  }
  return { jobs, more };
}

// ---------- screens ----------
function show(name) {
  for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== name;
}
function route() {
  const [name, arg] = location.hash.slice(1).split("/");
  clearInterval(state.timer);
  if (name === "job" && arg) { show("job"); openJob(arg); }
  else if (name === "image" && arg) { show("viewer"); viewer.openFile(arg).catch((e) => { $("#v-title").textContent = e.message; }); }
  else if (name === "viewer" && arg) { show("viewer"); viewer.open(arg).catch((e) => { $("#v-title").textContent = e.message; }); }
  else if (name === "jobs") { show("jobs"); refreshJobs(); state.timer = setInterval(refreshJobs, 1000); }
  else { show("files"); refreshFiles(); }
}

// ---------- files ----------
const fmtSize = (b) => (b > 1048576 ? (b / 1048576).toFixed(2) + " MiB" : (b / 1024).toFixed(1) + " KiB");
function beamText(m) {
  if (!m || !Array.isArray(m.beam) || m.beam[0] == null) return "";
  return m.beam.slice(0, 2).map((d) => (d * 3600).toFixed(1)).join(" × ") + (m.beam[2] != null ? ` @${m.beam[2]}°` : "");
}
async function refreshFiles() {
  state.files = await api("fileids");
  const tbody = $("#file-table tbody");
  tbody.replaceChildren(...state.files.map((f) => {
    const m = typeof f.metadata === "object" && f.metadata ? f.metadata : {};
    return el("tr", { "data-id": f.fileid },
      el("td", { text: f.filename_orig }), el("td", { text: fmtSize(f.size_bytes) }),
      el("td", { text: (m.shape || []).join(" × ") }), el("td", { text: beamText(m) }),
      el("td", { text: (m.ctype || []).join(", ") }), el("td", { text: f.filedate.slice(0, 19).replace("T", " ") }),
      el("td", { text: f.tag || "" }),
      el("td", {}, el("a", { class: "button", href: "#image/" + f.fileid, text: "view" }), " ",
        el("a", { class: "button", href: API + "download/" + f.fileid, text: "download" }), " ",
        el("button", { class: "delete", onclick: () => deleteFile(f) , text: "delete" })));
  }));
  fillFileChooser();
}
async function deleteFile(f) {
  try { await api("delete/" + f.fileid, { method: "POST" }); } catch (e) { alert(e.message); }
  refreshFiles();
}
function uploadOne(file, tag) {
  const bar = el("progress", { max: 100, value: 0 });
  const msg = el("span", { class: "msg" });
  const row = el("div", { class: "upload" }, el("span", { text: file.name + " " }), bar, " ", msg);
  $("#uploads").append(row);
  if (file.size > settings.resumableAbove) return uploadResumable(file, tag, bar, msg, row);
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", API + "upload");
    for (const [k, v] of Object.entries(auth.headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 200) { bar.value = 100; msg.textContent = "uploaded"; row.classList.add("done"); }
      else { msg.textContent = body.status || xhr.statusText; msg.className = "error"; }
      resolve();
    };
    xhr.onerror = () => { msg.textContent = "network error"; msg.className = "error"; resolve(); };
    const form = new FormData();
    form.append("file", file);
    if (tag) form.append("tag", tag);
    xhr.send(form);
  });
}
/** A large file by tus: chunks, resumed after a cut (also after a reload of the page). */
async function uploadResumable(file, tag, bar, msg, row) {
  row.classList.add("resumable");
  try {
    const id = await tus.upload(file, {
      endpoint: API + "files/tus", headers: auth.headers, tag, chunkSize: settings.chunkSize,
      onProgress: (done, total) => { bar.value = (100 * done) / total; },
    });
    bar.value = 100; msg.textContent = "uploaded (resumable)"; row.classList.add("done"); row.dataset.fileId = id;
  } catch (e) { msg.textContent = e.message; msg.className = "error"; }
}
async function uploadAll(files) {
  const tag = $("#upload-tag").value;
  await Promise.all([...files].map((f) => uploadOne(f, tag)));
  refreshFiles();
}
function setupFiles() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); uploadAll(e.dataTransfer.files); });
  $("#file-input").addEventListener("change", (e) => { uploadAll(e.target.files); e.target.value = ""; });
}

// ---------- job form ----------
function fillFileChooser() {
  const sel = $("#job-file"), keep = sel.value;
  sel.replaceChildren(...state.files.map((f) => el("option", { value: f.fileid, text: f.filename_orig })));
  if (keep) sel.value = keep;
}
async function loadApps() {
  const body = await api("apps");
  state.apps = body.details.filter((a) => a.available);
  $("#job-app").replaceChildren(...state.apps.map((a) => el("option", { value: a.name, text: a.name })));
  $("#filter-app").append(...body.apps.map((n) => el("option", { value: n, text: n })));
  await buildForm();
}
function optionInput(name, o) {
  if (o.type === "none") return el("input", { type: "checkbox", name, "data-type": "flag" });
  if (o.enum) {
    const s = el("select", { name, "data-type": "enum" }, ...o.allowed_values.map((v) => el("option", { value: v, text: v })));
    s.value = o.default;
    return s;
  }
  const attrs = { name, "data-type": o.type, type: o.type === "int" || o.type === "float" ? "number" : "text" };
  if (o.type === "float") attrs.step = "any";
  if (o.min !== "" && o.min != null) attrs.min = o.min;
  if (o.max !== "" && o.max != null) attrs.max = o.max;
  const i = el("input", attrs);
  i.value = o.default ?? "";
  return i;
}
async function buildForm() {
  const name = $("#job-app").value;
  // Only the latest choice's form is shown: an earlier app's description answering later
  // (the first app's, asked at start) would replace the form, and what the user typed in it.
  const gen = ++state.formGen;
  const app = state.apps.find((a) => a.name === name);
  $("#app-desc").textContent = app ? app.description : "";
  const desc = await api(`app/${encodeURIComponent(name)}/describe`);
  if (gen !== state.formGen) return;
  state.desc = desc;
  const basic = [], adv = [];
  for (const [opt, o] of Object.entries(desc)) {
    if (o.effective === false) continue;
    const input = optionInput(opt, o);
    const bounds = o.min !== undefined && (o.min !== "" || o.max !== "") ? ` [${o.min} … ${o.max}]` : "";
    const field = el("div", { class: "field", "data-option": opt },
      el("label", { text: opt, for: "opt-" + opt }), input,
      el("div", { class: "help", text: (o.description || "") + bounds }), el("div", { class: "error" }));
    input.id = "opt-" + opt;
    (o.advanced ? adv : basic).push(field);
  }
  $("#options").replaceChildren(...basic);
  $("#options-adv").replaceChildren(...adv);
  $("#advanced").hidden = adv.length === 0;
  $("#options").dataset.app = name; // whose options these are
}
function formValues() {
  const out = {};
  for (const input of document.querySelectorAll("#options [name], #options-adv [name]")) {
    const o = state.desc[input.name], t = input.dataset.type;
    let v;
    if (t === "flag") { if (!input.checked) continue; v = true; }
    else if (t === "int" || t === "float") { if (input.value === "") continue; v = Number(input.value); }
    else v = input.value;
    if (v === o.default) continue; // send only what the user changed
    out[input.name] = v;
  }
  return out;
}
function clearErrors() {
  $("#form-error").textContent = "";
  for (const e of document.querySelectorAll(".field .error")) e.textContent = "";
  for (const e of document.querySelectorAll(".invalid")) e.classList.remove("invalid");
}
function showErrors(body) {
  const left = [];
  for (const msg of body.errors || [body.status]) {
    const m = /option '([^']+)'/.exec(msg || "");
    const field = m && document.querySelector(`.field[data-option="${m[1]}"]`);
    if (field) {
      field.querySelector(".error").textContent = msg;
      field.querySelector("[name]").classList.add("invalid");
      if (field.closest("details")) field.closest("details").open = true;
    } else left.push(msg);
  }
  $("#form-error").textContent = left.join("; ");
}
async function submitJob(e) {
  e.preventDefault();
  clearErrors();
  const body = { app: $("#job-app").value, data_inputs: $("#job-file").value, job_inputs: formValues() };
  try {
    const r = await api("job", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    location.hash = "job/" + r.job_id;
  } catch (err) { showErrors(err.body || { status: err.message }); }
}

// ---------- job list ----------
const FINAL = new Set(["SUCCESS", "FAILURE", "CANCELED", "TIMED-OUT", "ABORTED"]);
async function refreshJobs() {
  if (state.jobsBusy) return; // the previous look has not answered yet
  state.jobsBusy = true;
  try { await showJobs(); } finally { state.jobsBusy = false; }
}
async function showJobs() {
  const { jobs, more } = await listJobs(state.jobPages);
  state.jobs = jobs;
  $("#jobs-more").hidden = !more;
  const fs = $("#filter-state").value, fa = $("#filter-app").value;
  const names = Object.fromEntries(state.files.map((f) => [f.fileid, f.filename_orig]));
  const rows = state.jobs.filter((j) => (!fs || j.state === fs) && (!fa || j.app === fa));
  $("#job-table tbody").replaceChildren(...rows.map((j) => el("tr", { "data-id": j.job_id, "data-state": j.state },
    el("td", {}, el("a", { href: "#job/" + j.job_id, text: j.job_id.slice(0, 8) })),
    el("td", { text: j.app }), el("td", { text: names[j.data_inputs] || j.data_inputs || "" }),
    el("td", { class: "state", text: j.state }), el("td", { text: j.submit_date.slice(0, 19).replace("T", " ") }),
    el("td", { text: String(j.elapsed_time) }),
    el("td", {}, FINAL.has(j.state) ? "" : el("button", { class: "cancel", text: "cancel", onclick: () => cancelJob(j.job_id) })))));
}
async function cancelJob(id) {
  try { await api(`job/${id}/cancel`, { method: "POST" }); } catch (e) { alert(e.message); }
  refreshJobs();
}

// ---------- job page ----------
async function openJob(id) {
  $("#job-id").textContent = id;
  const tick = async () => {
    const st = await api(`job/${id}/status`);
    $("#job-state").textContent = st.state;
    $("#job-msg").textContent = st.status || "";
    $("#job-events").replaceChildren(...st.events.map((e) => el("li", { text: `${e.time.slice(11, 19)} ${e.from || ""} → ${e.to} ${e.reason || ""}` })));
    try { $("#job-log").textContent = await api(`job/${id}/results/log`); } catch { /* no log yet */ }
    if (FINAL.has(st.state)) { clearInterval(state.timer); await showResults(id, st.state); }
  };
  $("#job-results").replaceChildren();
  $("#open-viewer").hidden = true;
  await tick();
  if (!FINAL.has($("#job-state").textContent)) state.timer = setInterval(tick, 700);
}
async function showResults(id, st) {
  let res = { results: [] };
  try { res = await api(`job/${id}/results`); } catch { return; }
  $("#job-results").replaceChildren(...res.results.map((r) => el("li", {},
    el("a", { href: API + `job/${id}/results/${r.name}`, download: r.filename, text: r.filename }), ` (${fmtSize(r.size)})`)));
  if (st === "SUCCESS" && res.results.some((r) => r.name === "catalog-json")) {
    $("#open-viewer").hidden = false;
    $("#open-viewer").href = "#viewer/" + id;
  }
}

// ---------- hand-offs: downloads and SAMP ----------
function handoffs(jobId) {
  const link = (name, text) => el("a", { class: "button", href: API + `job/${jobId}/results/${name}`, download: "", text });
  $("#downloads").replaceChildren(link("catalog", "VOTable"), " ", link("catalog-csv", "CSV"), " ",
    link("regions", "DS9 regions"), " ");
  const send = async (kind) => {
    $("#samp-msg").textContent = "";
    const url = kind === "image" ? API + "download/" + viewer.state.fileId : API + `job/${jobId}/results/catalog`;
    try {
      await samp.broadcast(samp.loadMessage(kind, new URL(url, location.href).href, `caesar-rest ${jobId.slice(0, 8)}`));
      $("#samp-msg").textContent = "sent";
    } catch (e) { $("#samp-msg").textContent = e.message; }
  };
  $("#samp-table").onclick = () => send("table");
  $("#samp-image").onclick = () => send("image");
}
const viewer = createViewer({ api, fetchBlob, listJobs: async () => (await listJobs(5)).jobs, handoffs, apiBase: API, el, $ });

// With authentication on, links to the API cannot carry the token: fetch, then save the blob.
document.addEventListener("click", async (e) => {
  const a = e.target.closest && e.target.closest("a[href]");
  if (!a || !auth.enabled() || !a.href.startsWith(API)) return;
  e.preventDefault();
  try {
    const r = await fetch(a.href, { headers: auth.headers() });
    if (!r.ok) throw new Error(r.statusText);
    const m = /filename="([^"]+)"/.exec(r.headers.get("content-disposition") || "");
    const url = URL.createObjectURL(await r.blob());
    const save = el("a", { href: url, download: a.getAttribute("download") || (m && m[1]) || "download" });
    document.body.append(save); save.click(); save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) { alert(err.message); }
});

// ---------- start ----------
setupFiles();
$("#job-app").addEventListener("change", buildForm);
$("#job-form").addEventListener("submit", submitJob);
$("#filter-state").addEventListener("change", refreshJobs);
$("#filter-app").addEventListener("change", refreshJobs);
$("#jobs-more").addEventListener("click", () => { state.jobPages += 1; refreshJobs(); });
window.addEventListener("hashchange", route);
if (!(await auth.start({ el, $ }))) throw new Error("not logged in"); // the login screen is shown
fetch("../login", { headers: auth.headers() }).then((r) => r.json()).then((b) => { $("#who").textContent = b.user || ""; }).catch(() => {});
await refreshFiles();
await loadApps();
route();
