// Image viewer: PNG tiles of a pyramid (pan, zoom), scale and colour map, cursor readout,
// the catalogue as ellipses and its islands as contours over the image (SVG), a sortable and
// filterable table linked both ways with the overlay, and a second job's catalogue overlaid
// and compared.
const SVGNS = "http://www.w3.org/2000/svg";
const FINAL_OK = "SUCCESS";
const MAX_ROWS = 300;

export function createViewer(env) {
  // env: { api(path, opts), fetchBlob(url), apiBase, el, $ }
  const { el, $ } = env;
  const v = {
    info: null, fileId: null, jobId: null, zoom: 1, cx: 0, cy: 0, W: 0, H: 0,
    tiles: new Map(), cat: null, cat2: null, compare: null, sel: null, sortKey: null, sortDir: 1,
    frames: [], pending: false, pixelBusy: false, selIsland: null,
  };
  window.caesarViewer = v; // for the benchmark and the tests

  const box = () => $("#view");
  const params = () => {
    const info = v.info, q = $("#v-interval").value;
    const p = info.percentiles, lo = p[String((100 - q) / 2)], hi = p[String((100 + Number(q)) / 2)];
    return { scale: $("#v-scale").value, cmap: $("#v-cmap").value, lo, hi: hi > lo ? hi : lo + 1e-30 };
  };
  // The coarsest level whose pixel covers at most ~1.2 screen pixels (4x fewer tiles than
  // the level below, for a barely visible up-sampling); level 0 from zoom 1/1.19 on.
  const levelFor = (zoom) => Math.max(0, Math.min(v.info.levels - 1, Math.floor(Math.log2(1 / zoom) + 0.25)));
  const levelSize = (k) => [Math.ceil(v.info.shape[0] / 2 ** k), Math.ceil(v.info.shape[1] / 2 ** k)];

  // ---------- coordinates: image pixels (0-based centres, y up) <-> screen ----------
  const toScreen = (x, y) => [(x - v.cx) * v.zoom + v.W / 2, v.H / 2 - (y - v.cy) * v.zoom];
  const toImage = (sx, sy) => [(sx - v.W / 2) / v.zoom + v.cx, (v.H / 2 - sy) / v.zoom + v.cy];

  function fit() {
    const r = box().getBoundingClientRect();
    v.W = r.width; v.H = r.height;
    const [ny, nx] = v.info.shape;
    v.zoom = Math.min(v.W / nx, v.H / ny);
    v.cx = (nx - 1) / 2; v.cy = (ny - 1) / 2;
    draw();
  }

  function draw() {
    if (v.pending) return;
    v.pending = true;
    requestAnimationFrame((t) => { v.pending = false; const t0 = performance.now(); render(); v.frames.push(performance.now() - t0); });
  }

  function render() {
    const k = levelFor(v.zoom), s = 2 ** k, T = v.info.tile, P = params();
    const [nyk, nxk] = levelSize(k);
    const [x0, y1] = toImage(0, 0), [x1, y0] = toImage(v.W, v.H);
    const tx0 = Math.max(0, Math.floor((x0 + 0.5) / (T * s))), tx1 = Math.min(Math.ceil(nxk / T) - 1, Math.floor((x1 + 0.5) / (T * s)));
    const ty0 = Math.max(0, Math.floor((y0 + 0.5) / (T * s))), ty1 = Math.min(Math.ceil(nyk / T) - 1, Math.floor((y1 + 0.5) / (T * s)));
    const tag = `${P.scale}/${P.cmap}/${P.lo}/${P.hi}`;
    const want = new Set();
    let missing = 0;
    for (let ty = ty0; ty <= ty1; ty++) for (let tx = tx0; tx <= tx1; tx++) {
      const key = `${k}/${tx}/${ty}/${tag}`;
      want.add(key);
      let t = v.tiles.get(key);
      if (!t) { t = newTile(k, tx, ty, P, key); v.tiles.set(key, t); }
      if (!t.loaded) missing++;
      place(t, k, tx, ty, nxk, nyk);
    }
    if (missing === 0 && v.firstView == null) v.firstView = performance.now() - v.t0;
    // Tiles of other levels stay under the new ones until these have loaded.
    for (const [key, t] of v.tiles) {
      if (want.has(key)) { t.img.style.zIndex = 2; continue; }
      if (missing === 0 || !t.loaded) drop(key, t);
      else { t.img.style.zIndex = 1; const [kk, tx, ty] = key.split("/").map(Number); const [nyq, nxq] = levelSize(kk); place(t, kk, tx, ty, nxq, nyq); }
    }
    $("#tiles").classList.toggle("pixelated", v.zoom > 1.5);
    $("#ov-g").setAttribute("transform", `matrix(${v.zoom},0,0,${-v.zoom},${v.W / 2 - v.cx * v.zoom},${v.H / 2 + v.cy * v.zoom})`);
    $("#v-zoom").textContent = `zoom ${v.zoom >= 1 ? v.zoom.toFixed(2) : "1/" + (1 / v.zoom).toFixed(2)} · level ${k}`;
  }
  function place(t, k, tx, ty, nxk, nyk) {
    const s = 2 ** k, T = v.info.tile;
    const w = Math.min(T, nxk - tx * T), h = Math.min(T, nyk - ty * T);
    const [left, top] = toScreen(tx * T * s - 0.5, (ty * T + h) * s - 0.5);
    Object.assign(t.img.style, { left: left + "px", top: top + "px", width: w * s * v.zoom + "px", height: h * s * v.zoom + "px" });
  }
  function newTile(k, tx, ty, P, key) {
    const img = el("img", { class: "tile", alt: "" });
    const t = { img, loaded: false, url: null };
    const q = new URLSearchParams({ scale: P.scale, cmap: P.cmap, lo: P.lo, hi: P.hi });
    const t0 = performance.now();
    env.fetchBlob(`${env.apiBase}file/${v.fileId}/tiles/${k}/${tx}/${ty}?${q}`).then((blob) => {
      if (!v.tiles.has(key)) return;
      v.tileTimes.push({ fetched: performance.now() - t0, bytes: blob.size });
      t.url = URL.createObjectURL(blob);
      img.onload = () => { t.loaded = true; v.tileTimes.at(-1).decoded = performance.now() - t0; draw(); };
      img.src = t.url;
    }).catch(() => {});
    $("#tiles").append(img);
    return t;
  }
  function drop(key, t) { t.img.remove(); if (t.url) URL.revokeObjectURL(t.url); v.tiles.delete(key); }
  function clearTiles() { for (const [key, t] of v.tiles) drop(key, t); }

  // ---------- pan, zoom, cursor ----------
  function zoomAt(factor, sx, sy) {
    const [ix, iy] = toImage(sx, sy);
    const [ny, nx] = v.info.shape;
    const minZ = Math.min(v.W / nx, v.H / ny) / 4;
    v.zoom = Math.min(32, Math.max(minZ, v.zoom * factor));
    v.cx = ix - (sx - v.W / 2) / v.zoom; v.cy = iy - (v.H / 2 - sy) / v.zoom;
    draw();
  }
  function setupInput() {
    const b = box();
    let drag = null;
    b.addEventListener("pointerdown", (e) => {
      if (e.target.tagName === "ellipse") return;
      // Islands cover their inside: a drag may start on them, a press and release in place
      // (pointer capture sends no click to the polygon) selects the island.
      const island = e.target.tagName === "polygon" ? Number(e.target.dataset.island) : null;
      drag = { x: e.clientX, y: e.clientY, cx: v.cx, cy: v.cy, island };
      b.setPointerCapture(e.pointerId);
    });
    b.addEventListener("pointerup", (e) => {
      if (drag && drag.island != null && Math.hypot(e.clientX - drag.x, e.clientY - drag.y) < 4) selectIsland(drag.island);
      drag = null;
    });
    b.addEventListener("pointermove", (e) => {
      const r = b.getBoundingClientRect();
      if (drag) { v.cx = drag.cx - (e.clientX - drag.x) / v.zoom; v.cy = drag.cy + (e.clientY - drag.y) / v.zoom; draw(); }
      readout(...toImage(e.clientX - r.left, e.clientY - r.top));
    });
    b.addEventListener("wheel", (e) => { e.preventDefault(); const r = b.getBoundingClientRect(); zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top); }, { passive: false });
    $("#v-in").onclick = () => zoomAt(2, v.W / 2, v.H / 2);
    $("#v-out").onclick = () => zoomAt(0.5, v.W / 2, v.H / 2);
    $("#v-fit").onclick = fit;
    $("#v-one").onclick = () => { v.zoom = 1; draw(); };
    for (const id of ["#v-scale", "#v-cmap", "#v-interval"]) $(id).onchange = () => { clearTiles(); draw(); };
    $("#v-islands").onchange = () => $("#ov-i").classList.toggle("hidden", !$("#v-islands").checked);
    window.addEventListener("resize", () => { if (v.info && !$("#viewer").hidden) { const r = b.getBoundingClientRect(); v.W = r.width; v.H = r.height; draw(); } });
  }
  let lastPos = null;
  async function readout(x, y) {
    lastPos = [x, y];
    if (v.pixelBusy) return;
    v.pixelBusy = true;
    try {
      while (lastPos) {
        const [px, py] = lastPos; lastPos = null;
        const [ny, nx] = v.info.shape;
        if (px < -0.5 || py < -0.5 || px >= nx - 0.5 || py >= ny - 0.5) { $("#v-cursor").textContent = ""; continue; }
        const p = await env.api(`file/${v.fileId}/pixel?x=${px.toFixed(2)}&y=${py.toFixed(2)}`);
        const val = p.value == null ? "blank" : `${p.value.toPrecision(4)} ${p.bunit}`;
        $("#v-cursor").textContent = `x ${p.x}  y ${p.y}  ·  RA ${hms(p.ra)}  Dec ${dms(p.dec)}  (${p.ra.toFixed(5)}°, ${p.dec.toFixed(5)}°)  ·  ${val}`;
      }
    } catch { /* outside or gone */ } finally { v.pixelBusy = false; }
  }

  // ---------- catalogue overlay and table ----------
  function colourOf(cat, src) { return (cat.class_colours || {})[src.class] || cat.unclassified || "cyan"; }
  function drawCatalogue(cat, group, second) {
    group.replaceChildren();
    const unmatched = new Set(second ? v.compare?.unmatched_b || [] : v.compare?.unmatched_a || []);
    for (const e of cat.ellipses) {
      const src = cat.sources[e.row];
      const node = document.createElementNS(SVGNS, "ellipse");
      const attrs = { cx: e.x, cy: e.y, rx: Math.max(e.a, 0.5), ry: Math.max(e.b, 0.5), transform: `rotate(${(e.theta * 180) / Math.PI} ${e.x} ${e.y})`, "data-row": e.row, "vector-effect": "non-scaling-stroke" };
      for (const [a, val] of Object.entries(attrs)) node.setAttribute(a, val);
      node.setAttribute("class", "src" + (second ? " second" : "") + (v.compare && unmatched.has(src.name) ? " unmatched" : ""));
      if (!second) node.style.stroke = colourOf(cat, src);
      node.addEventListener("mouseenter", (ev) => hover(cat, e.row, ev));
      node.addEventListener("mouseleave", () => { $("#v-tip").hidden = true; });
      node.addEventListener("click", () => (second ? showRow(cat, e.row) : select(e.row, false)));
      group.append(node);
    }
  }
  // ---------- island contours ----------
  function drawIslands(cat) {
    const group = $("#ov-i");
    group.replaceChildren();
    const isl = cat.islands;
    $("#v-islands-label").hidden = !isl;
    if (!isl) return;
    isl.contours.forEach((c, i) => {
      const node = document.createElementNS(SVGNS, "polygon");
      const pts = [];
      for (let j = 0; j < c.points.length; j += 2) pts.push(c.points[j] + "," + c.points[j + 1]);
      node.setAttribute("points", pts.join(" "));
      node.setAttribute("class", "island");
      node.setAttribute("data-island", i);
      node.setAttribute("vector-effect", "non-scaling-stroke");
      node.style.stroke = colourOf(cat, { class: c.class });
      node.addEventListener("mouseenter", (ev) => hoverIsland(c, ev));
      node.addEventListener("mouseleave", () => { $("#v-tip").hidden = true; });
      group.append(node);
    });
  }
  function hoverIsland(c, ev) {
    const tip = $("#v-tip"), r = box().getBoundingClientRect();
    tip.textContent = `island ${c.name}  ${c.rows.length} source${c.rows.length === 1 ? "" : "s"}  ${c.class || ""}`;
    tip.style.left = ev.clientX - r.left + 12 + "px"; tip.style.top = ev.clientY - r.top + 12 + "px";
    tip.hidden = false;
  }
  /** An island clicked: its contour and its sources marked, its row (islands.json) shown. */
  function selectIsland(i) {
    const isl = v.cat.islands, c = isl.contours[i];
    v.selIsland = i;
    for (const n of document.querySelectorAll("#ov-i .sel, .in-island")) n.classList.remove("sel", "in-island");
    const node = document.querySelector(`#ov-i polygon[data-island="${i}"]`);
    if (node) node.classList.add("sel");
    for (const r of c.rows) {
      for (const n of document.querySelectorAll(`#ov-a ellipse[data-row="${r}"], #cat-table tbody tr[data-row="${r}"]`)) n.classList.add("in-island");
    }
    const kids = [el("h4", { text: `island ${c.name}` }),
      el("p", {}, `${c.rows.length} catalogue row${c.rows.length === 1 ? "" : "s"}: `, ...c.rows.flatMap((r, k) => [k ? ", " : "",
        el("a", { href: "#", text: v.cat.sources[r].name, onclick: (e) => { e.preventDefault(); select(r, true); } })]))];
    const row = isl.table && c.row != null ? isl.table.sources[c.row] : null;
    if (row) {
      kids.push(el("table", {}, el("tbody", {}, ...isl.table.columns.map((col) => el("tr", {},
        el("th", { text: col.name }), el("td", { text: `${fmt(row[col.name])} ${col.unit || ""}` }))))));
    }
    $("#v-row").replaceChildren(...kids);
  }
  function markIslandOf(row) {
    for (const n of document.querySelectorAll("#ov-i .of-sel")) n.classList.remove("of-sel");
    const isl = v.cat.islands, id = v.cat.sources[row].island_id;
    if (!isl || id == null) return;
    const i = isl.contours.findIndex((c) => c.island_id === id);
    if (i >= 0) document.querySelector(`#ov-i polygon[data-island="${i}"]`).classList.add("of-sel");
  }

  function hover(cat, row, ev) {
    const s = cat.sources[row], tip = $("#v-tip"), r = box().getBoundingClientRect();
    tip.textContent = `${s.name}  ${s.class || ""}  peak ${fmt(s.peak_flux)} Jy/beam  snr ${fmt(s.snr)}`;
    tip.style.left = ev.clientX - r.left + 12 + "px"; tip.style.top = ev.clientY - r.top + 12 + "px";
    tip.hidden = false;
  }
  function showRow(cat, row) {
    const s = cat.sources[row];
    $("#v-row").replaceChildren(el("h4", { text: s.name }), el("table", {}, el("tbody", {},
      ...cat.columns.map((c) => el("tr", {}, el("th", { text: c.name }), el("td", { text: `${fmt(s[c.name])} ${c.unit || ""}` }))))));
  }
  function select(row, centre) {
    v.sel = row;
    for (const n of document.querySelectorAll("#ov-a ellipse.sel, #cat-table tr.sel")) n.classList.remove("sel");
    const node = document.querySelector(`#ov-a ellipse[data-row="${row}"]`);
    if (node) { node.classList.add("sel"); node.parentNode.append(node); }
    if (!document.querySelector(`#cat-table tbody tr[data-row="${row}"]`)) fillTable();
    const tr = document.querySelector(`#cat-table tbody tr[data-row="${row}"]`);
    if (tr) {
      tr.classList.add("sel");
      // Scroll the table's own box only (scrollIntoView would move the page off the image).
      const wrap = tr.closest(".cat-wrap");
      if (tr.offsetTop < wrap.scrollTop || tr.offsetTop + tr.offsetHeight > wrap.scrollTop + wrap.clientHeight) {
        wrap.scrollTop = tr.offsetTop - wrap.clientHeight / 2;
      }
    }
    showRow(v.cat, row);
    markIslandOf(row);
    if (centre) { const s = v.cat.sources[row]; v.cx = s.x; v.cy = s.y; if (v.zoom < 1) v.zoom = 1; draw(); }
  }
  const COLS = ["name", "class", "x", "y", "ra", "dec", "peak_flux", "flux", "maj", "min", "pa", "snr", "flags"];
  function tableRows() {
    const f = $("#cat-filter").value.trim(), cls = $("#cat-class").value;
    let test = () => true;
    const m = /^(\w+)\s*(<=|>=|<|>|=|!=)\s*(\S+)$/.exec(f);
    if (m) {
      const [, col, op, raw] = m, num = Number(raw);
      const cmp = { "<": (a) => a < num, ">": (a) => a > num, "<=": (a) => a <= num, ">=": (a) => a >= num, "=": (a) => a == raw, "!=": (a) => a != raw }[op];
      test = (s) => s[col] != null && cmp(s[col]);
    } else if (f) test = (s) => String(s.name).toLowerCase().includes(f.toLowerCase());
    let rows = v.cat.sources.map((s, i) => i).filter((i) => test(v.cat.sources[i]) && (!cls || v.cat.sources[i].class === cls));
    if (v.sortKey) {
      const k = v.sortKey, d = v.sortDir;
      rows.sort((a, b) => { const x = v.cat.sources[a][k], y = v.cat.sources[b][k]; return (x == null) - (y == null) || (x < y ? -d : x > y ? d : 0); });
    }
    return rows;
  }
  function fillTable() {
    const cols = COLS.filter((c) => v.cat.columns.some((x) => x.name === c));
    $("#cat-table thead").replaceChildren(el("tr", {}, ...cols.map((c) => el("th", {
      text: c + (v.sortKey === c ? (v.sortDir > 0 ? " ▲" : " ▼") : ""), "data-col": c,
      onclick: () => { v.sortDir = v.sortKey === c ? -v.sortDir : 1; v.sortKey = c; fillTable(); },
    }))));
    const rows = tableRows();
    const shown = new Set(rows);
    for (const n of document.querySelectorAll("#ov-a ellipse")) n.classList.toggle("hidden", !shown.has(Number(n.dataset.row)));
    // At most MAX_ROWS rows in the page (plus the selected one): a long table costs the
    // browser more layout than the whole image.
    let page = rows.slice(0, MAX_ROWS);
    if (v.sel != null && shown.has(v.sel) && !page.includes(v.sel)) page = [v.sel, ...page];
    const islands = v.cat.islands ? ` in ${v.cat.islands.contours.length} islands` : "";
    $("#cat-count").textContent = `${rows.length} of ${v.cat.sources.length} sources${islands}` +
      (rows.length > page.length ? ` (the first ${MAX_ROWS} listed: sort or filter for others)` : "");
    const inIsland = new Set(v.selIsland != null ? v.cat.islands.contours[v.selIsland].rows : []);
    $("#cat-table tbody").replaceChildren(...page.map((i) => {
      const s = v.cat.sources[i];
      const cls = [i === v.sel ? "sel" : "", inIsland.has(i) ? "in-island" : ""].join(" ").trim();
      return el("tr", { "data-row": i, class: cls, onclick: () => select(i, true) },
        ...cols.map((c) => el("td", { text: fmt(s[c]) })));
    }));
  }

  // ---------- a second job's catalogue, and the comparison ----------
  async function listCompareJobs() {
    const jobs = await env.listJobs();
    const sel = $("#v-compare");
    sel.replaceChildren(el("option", { value: "", text: "none" }), ...jobs
      .filter((j) => j.job_id !== v.jobId && j.state === FINAL_OK && j.data_inputs === v.fileId)
      .map((j) => el("option", { value: j.job_id, text: `${j.app} ${j.job_id.slice(0, 8)}` })));
  }
  async function setCompare(id) {
    v.cat2 = null; v.compare = null; $("#v-compare-report").textContent = "";
    if (id) {
      [v.cat2, v.compare] = await Promise.all([env.api(`job/${id}/overlay`), env.api(`compare?job_a=${v.jobId}&job_b=${id}`)]);
      const c = v.compare, fr = c.flux_ratio_b_over_a || {};
      $("#v-compare-report").textContent = `${c.n_matched} matched within ${c.radius_arcsec.toFixed(1)}″ · ` +
        `${c.n_unmatched_a} only in this job (solid, thick) · ${c.n_unmatched_b} only in ${v.cat2.app} (dashed, thick) · ` +
        `median flux ratio ${fmt(fr.median)}`;
    }
    drawCatalogue(v.cat, $("#ov-a"), false);
    if (v.cat2) drawCatalogue(v.cat2, $("#ov-b"), true); else $("#ov-b").replaceChildren();
    fillTable();
  }

  // ---------- open ----------
  function reset() {
    clearTiles(); v.sel = null; v.selIsland = null; v.compare = null; v.cat2 = null; v.cat = null; v.firstView = null; v.frames = []; v.marks = {}; v.tileTimes = [];
    $("#v-row").replaceChildren(); $("#v-compare-report").textContent = "";
    for (const id of ["#ov-a", "#ov-b", "#ov-i", "#cat-table thead", "#cat-table tbody", "#cat-legend", "#downloads"]) $(id).replaceChildren();
    $("#cat-count").textContent = "";
    v.t0 = performance.now();
  }
  async function showImage(fileId, title) {
    v.fileId = fileId;
    v.info = await env.api(`file/${fileId}/image`);
    v.marks.info = performance.now() - v.t0;
    $("#v-title").textContent = `${title} · ${v.info.shape[1]} × ${v.info.shape[0]} px`;
    $("#v-interval").replaceChildren(...v.info.intervals.map((q) => el("option", { value: q, text: q === 100 ? "min–max" : q + " %" })));
    $("#v-interval").value = "99.5";
    fit();
  }
  /** The image of an uploaded file alone. */
  async function openFile(fileId) {
    v.jobId = null; reset();
    $("#v-job-only").hidden = true; $("#v-compare-label").hidden = true; $("#v-islands-label").hidden = true;
    await showImage(fileId, "file " + fileId.slice(0, 8));
  }
  /** A job's input image with its catalogue. */
  async function open(jobId) {
    v.jobId = jobId; reset();
    $("#v-job-only").hidden = false; $("#v-compare-label").hidden = false;
    $("#v-title").textContent = jobId;
    const cat = await env.api(`job/${jobId}/overlay`);
    v.marks.overlay = performance.now() - v.t0;
    v.cat = cat;
    // The tiles first (their requests go out in fit()), then the overlay and the table.
    await showImage(cat.file_id, `${cat.app} ${jobId.slice(0, 8)}`);
    v.marks.tiles_requested = performance.now() - v.t0;
    const classes = [...new Set(cat.sources.map((s) => s.class).filter(Boolean))].sort();
    $("#cat-class").replaceChildren(el("option", { value: "", text: "all classes" }), ...classes.map((c) => el("option", { value: c, text: c })));
    $("#cat-legend").replaceChildren(...classes.map((c) => el("span", { class: "swatch", text: c, style: `border-color:${colourOf(cat, { class: c })}` })));
    drawIslands(cat);
    drawCatalogue(cat, $("#ov-a"), false);
    fillTable();
    v.marks.catalogue_drawn = performance.now() - v.t0;
    $("#v-title").textContent += ` · ${cat.sources.length} sources`;
    env.handoffs(jobId, v.fileId);
    listCompareJobs().catch(() => {});
  }

  setupInput();
  $("#cat-filter").addEventListener("input", fillTable);
  $("#cat-class").addEventListener("change", fillTable);
  $("#v-compare").addEventListener("change", (e) => setCompare(e.target.value));
  return { open, openFile, state: v };
}

export function fmt(x) {
  if (x == null) return "";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(3) : x.toPrecision(5).replace(/\.?0+$/, "");
}
function sexa(v, div) {
  const sign = v < 0 ? "-" : "", a = Math.abs(v) / div;
  const d = Math.floor(a), m = Math.floor((a - d) * 60), s = ((a - d) * 60 - m) * 60;
  return [sign + String(d).padStart(2, "0"), String(m).padStart(2, "0"), s.toFixed(2).padStart(5, "0")];
}
export function hms(ra) { const [h, m, s] = sexa(((ra % 360) + 360) % 360, 15); return `${h}:${m}:${s}`; }
export function dms(dec) { const [d, m, s] = sexa(dec, 1); return `${dec >= 0 ? "+" : ""}${d}:${m}:${s.slice(0, 4)}`; }
