// vidtrack studio: a thin client of the server's interactive session. No framework, no build step, no
// request to anywhere but this server. State lives on the server (and its project folder); the page keeps the
// session id of this tab in sessionStorage, so a reload reattaches to the same work.
"use strict";

const $ = (id) => document.getElementById(id);
const SID_KEY = "vidtrack.studio.sid";

const studio = {
  info: null, session: null, frame: 0, objectId: null, frameData: null, timeline: null, job: null,
  suggestions: null, busy: false, drag: null, pending: 0,
  counts: { prompts: 0, propagations: 0, exports: 0, frames: 0 }, // finished operations (tests wait on these)
};
window.studio = studio; // for the browser tests and for poking around in the console

// --- talking to the server ---------------------------------------------------------------------------------
async function api(method, path, body) {
  studio.pending++;
  try {
    const opts = { method, headers: {} };
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
    const r = await fetch(path, opts);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || data.detail || `${r.status} ${r.statusText}`);
    return data;
  } finally {
    studio.pending--;
  }
}

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function guarded(fn) {
  try { return await fn(); } catch (e) { status(e.message, true); return undefined; }
}

const sp = () => `/api/sessions/${studio.session.sid}`;

// --- drawing ------------------------------------------------------------------------------------------------
function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function colorOf(id) {
  const o = (studio.session?.objects || []).find((x) => x.id === id);
  return o ? o.color : "#ffffff";
}

// COCO uncompressed runs over column-major pixels, zeros first -> RGBA pixels of one object.
function paintRuns(img, runs, rgb, alpha) {
  const { width: w, height: h, data } = img;
  let k = 0;
  for (let i = 0; i < runs.length; i++) {
    const n = runs[i];
    if (i % 2 === 1) {
      for (let j = k; j < k + n; j++) {
        const x = Math.floor(j / h), y = j - x * h, p = 4 * (y * w + x);
        data[p] = rgb[0]; data[p + 1] = rgb[1]; data[p + 2] = rgb[2]; data[p + 3] = alpha;
      }
    }
    k += n;
  }
}

function drawMasks() {
  const c = $("overlay"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const masks = (studio.frameData && studio.frameData.masks) || [];
  if (!masks.length) return;
  const img = ctx.createImageData(c.width, c.height);
  // highest id first, so the lowest id ends on top (the exports' overlap rule)
  for (const m of [...masks].sort((a, b) => b.object_id - a.object_id)) {
    if (!m.occluded) paintRuns(img, m.runs, hexToRgb(m.color), 140);
  }
  ctx.putImageData(img, 0, 0); // the overlay holds exactly the masks (the tests compare it with the API's)
}

function drawMarks() {
  const c = $("marks"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const r = Math.max(4, c.width / 120);
  for (const m of (studio.frameData && studio.frameData.masks) || []) { // outline box of each visible object
    if (m.occluded || !m.area) continue;
    ctx.strokeStyle = m.color; ctx.lineWidth = Math.max(1, c.width / 480);
    ctx.strokeRect(m.bbox[0] + 0.5, m.bbox[1] + 0.5, m.bbox[2], m.bbox[3]);
  }
  const prompts = (studio.frameData && studio.frameData.prompts) || {};
  for (const [oid, p] of Object.entries(prompts)) {
    const color = colorOf(Number(oid));
    if (p.box) {
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.setLineDash([6, 4]);
      ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
      ctx.setLineDash([]);
    }
    p.points.forEach(([x, y], i) => {
      const pos = p.labels[i] === 1;
      ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = pos ? "#2ecc71" : "#ff4d4d"; ctx.fill();
      ctx.lineWidth = 2; ctx.strokeStyle = "white"; ctx.stroke();
      ctx.beginPath(); ctx.moveTo(x - r / 2, y); ctx.lineTo(x + r / 2, y);
      if (pos) { ctx.moveTo(x, y - r / 2); ctx.lineTo(x, y + r / 2); }
      ctx.stroke();
    });
  }
  if (studio.suggestions && studio.suggestions.frame_idx === studio.frame) {
    ctx.font = `${Math.max(11, c.width / 70)}px system-ui`;
    for (const s of studio.suggestions.suggestions) {
      ctx.strokeStyle = "#ffd23f"; ctx.lineWidth = 2; ctx.setLineDash([3, 3]);
      ctx.strokeRect(s.bbox[0], s.bbox[1], s.bbox[2], s.bbox[3]); ctx.setLineDash([]);
      ctx.fillStyle = "#ffd23f"; ctx.fillText(`${s.label} ${s.score}`, s.bbox[0] + 3, s.bbox[1] + 14);
    }
  }
  if (studio.drag && studio.drag.moved) {
    const d = studio.drag;
    ctx.strokeStyle = colorOf(studio.objectId); ctx.lineWidth = 2;
    ctx.strokeRect(Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.abs(d.x1 - d.x0), Math.abs(d.y1 - d.y0));
  }
}

function drawTimeline() {
  const c = $("timeline"), ctx = c.getContext("2d");
  const t = studio.timeline, n = studio.session ? studio.session.num_frames : 0;
  const rows = t ? t.objects : [];
  const rowH = 12;
  c.width = c.clientWidth * (window.devicePixelRatio || 1);
  c.height = Math.max(24, rows.length * (rowH + 2) + 6) * (window.devicePixelRatio || 1);
  c.style.height = `${c.height / (window.devicePixelRatio || 1)}px`;
  const s = window.devicePixelRatio || 1;
  ctx.setTransform(s, 0, 0, s, 0, 0);
  const W = c.clientWidth;
  ctx.clearRect(0, 0, W, c.height);
  if (!n) return;
  const fw = W / n;
  rows.forEach((o, r) => {
    const y = 3 + r * (rowH + 2), row = t.rows[String(o.id)] || "";
    ctx.fillStyle = "#2a2f3a"; ctx.fillRect(0, y, W, rowH);
    for (let f = 0; f < row.length; f++) {
      if (row[f] === "v") ctx.fillStyle = o.color;
      else if (row[f] === "o") ctx.fillStyle = "#555b66";
      else continue;
      ctx.fillRect(f * fw, y, Math.max(fw, 1), rowH);
    }
    ctx.fillStyle = "white";
    for (const f of (t.prompted[String(o.id)] || [])) ctx.fillRect(f * fw + fw / 2 - 1, y, 2, rowH);
    ctx.font = "bold 9px system-ui"; ctx.lineWidth = 3; ctx.strokeStyle = "#0d0f12";
    ctx.strokeText(String(o.id), 3, y + 9); ctx.fillStyle = "white"; ctx.fillText(String(o.id), 3, y + 9);
  });
  ctx.fillStyle = "#4f8cff";
  ctx.fillRect(studio.frame * fw + fw / 2 - 1, 0, 2, c.height);
}

// --- frames -------------------------------------------------------------------------------------------------
let frameToken = 0;
async function showFrame(idx, { masks = true } = {}) {
  if (!studio.session) return;
  const n = studio.session.num_frames;
  idx = Math.max(0, Math.min(n - 1, idx));
  studio.frame = idx;
  const token = ++frameToken;
  $("slider").value = idx;
  $("frame-label").textContent = `${idx} / ${n - 1}`;
  const image = new Image();
  image.src = `${sp()}/frames/${idx}.jpg`;
  const [, data] = await Promise.all([
    image.decode().catch(() => null),
    masks ? api("GET", `${sp()}/masks/${idx}`).catch((e) => { status(e.message, true); return null; }) : null,
  ]);
  if (token !== frameToken) return; // a newer frame was asked for meanwhile
  $("frame").getContext("2d").drawImage(image, 0, 0);
  if (data) studio.frameData = data;
  drawMasks(); drawMarks(); drawTimeline();
  studio.counts.frames++;
}

async function refreshTimeline() {
  studio.timeline = await api("GET", `${sp()}/timeline`);
  drawTimeline();
}

// --- sessions -----------------------------------------------------------------------------------------------
function setSession(s) {
  studio.session = s;
  sessionStorage.setItem(SID_KEY, s.sid);
  for (const id of ["frame", "overlay", "marks"]) { $(id).width = s.width; $(id).height = s.height; }
  $("empty").hidden = true;
  $("slider").max = s.num_frames - 1;
  $("video-path").value = s.video;
  $("tracker").value = s.model;
  $("session-info").textContent = `${s.video} · ${s.width}×${s.height} · ${s.num_frames} frames · ${s.loaded_as} · session ${s.sid}`;
  if (!s.objects.some((o) => o.id === studio.objectId)) studio.objectId = s.objects.length ? s.objects[0].id : null;
  renderObjects();
  fitStage();
}

function renderObjects() {
  const ul = $("objects");
  ul.innerHTML = "";
  for (const o of studio.session ? studio.session.objects : []) {
    const li = document.createElement("li");
    li.dataset.id = o.id;
    if (o.id === studio.objectId) li.className = "selected";
    const frames = (studio.session.prompted[String(o.id)] || []);
    li.innerHTML = `<span class="swatch" style="background:${o.color}"></span><b>${o.id}</b>` +
      `<span class="meta">${frames.length ? "prompted on " + frames.join(", ") : "no prompt yet"}</span>` +
      `<button class="remove" title="remove object">×</button>`;
    li.addEventListener("click", (e) => {
      if (e.target.classList.contains("remove")) return removeObject(o.id);
      studio.objectId = o.id; renderObjects();
    });
    ul.appendChild(li);
  }
}

async function openSession(body) {
  status("opening…");
  const s = await guarded(() => api("POST", "/api/sessions", body));
  if (!s) return;
  await enter(s);
}

async function enter(s) {
  studio.suggestions = null;
  setSession(s);
  await refreshTimeline();
  await showFrame(s.job && s.job.last_frame != null ? s.job.last_frame : 0);
  status(`opened ${s.video}`);
  if (s.job && s.job.state === "running") pollJob();
  loadSaved();
}

async function reloadSession() {
  const s = await api("GET", sp());
  studio.session = s;
  renderObjects();
}

async function loadSaved() {
  const info = await api("GET", "/api/info");
  const ul = $("saved");
  ul.innerHTML = "";
  for (const r of info.saved.slice(0, 8)) {
    const li = document.createElement("li");
    const when = new Date(r.updated * 1000).toLocaleString();
    li.innerHTML = `<a href="#">${r.video.split("/").pop()}</a> · ${r.model} · ${when}`;
    li.querySelector("a").addEventListener("click", async (e) => {
      e.preventDefault();
      const s = await guarded(() => api("GET", `/api/sessions/${r.sid}`));
      if (s) await enter(s);
    });
    ul.appendChild(li);
  }
}

// --- objects and prompts ------------------------------------------------------------------------------------
async function addObject() {
  if (!studio.session) return;
  const o = await guarded(() => api("POST", `${sp()}/objects`, {}));
  if (!o) return;
  studio.objectId = o.id;
  await reloadSession();
  await refreshTimeline();
}

async function removeObject(id) {
  const s = await guarded(() => api("DELETE", `${sp()}/objects/${id}`));
  if (!s) return;
  studio.session = s;
  if (studio.objectId === id) studio.objectId = s.objects.length ? s.objects[0].id : null;
  setSession(s);
  await refreshTimeline();
  await showFrame(studio.frame);
}

async function prompt(body) {
  if (!studio.session || studio.busy) return;
  studio.busy = true;
  try {
    if (studio.objectId == null) await addObject();
    if (studio.objectId == null) return;
    status("thinking…");
    const t0 = performance.now();
    const data = await guarded(() => api("POST", `${sp()}/prompts`, { frame: studio.frame, object_id: studio.objectId, ...body }));
    if (!data) return;
    studio.frameData = data;
    studio.session.objects = data.objects;
    drawMasks(); drawMarks();
    const m = data.masks.find((x) => x.object_id === studio.objectId);
    status(`object ${studio.objectId}: ${m ? m.area : 0} px (${Math.round(performance.now() - t0)} ms)`);
    await reloadSession();
    await refreshTimeline();
  } finally {
    studio.busy = false;
    studio.counts.prompts++;
  }
}

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function canvasPoint(e) {
  const c = $("marks"), r = c.getBoundingClientRect();
  return [(e.clientX - r.left) * (c.width / r.width), (e.clientY - r.top) * (c.height / r.height)];
}

function suggestionAt(x, y) {
  const s = studio.suggestions;
  if (!s || s.frame_idx !== studio.frame) return null;
  // smallest box under the pointer: nested detections stay reachable
  const hits = s.suggestions.filter((d) => x >= d.bbox[0] && x <= d.bbox[0] + d.bbox[2] && y >= d.bbox[1] && y <= d.bbox[1] + d.bbox[3]);
  hits.sort((a, b) => a.area - b.area);
  return hits[0] || null;
}

function onMouseDown(e) {
  if (!studio.session || e.button !== 0) return;
  const [x, y] = canvasPoint(e);
  studio.drag = { x0: x, y0: y, x1: x, y1: y, moved: false };
}

function onMouseMove(e) {
  if (!studio.drag) return;
  const [x, y] = canvasPoint(e);
  const d = studio.drag;
  d.x1 = x; d.y1 = y;
  d.moved = d.moved || Math.hypot(x - d.x0, y - d.y0) > 6;
  if (d.moved) drawMarks();
}

async function onMouseUp(e) {
  const d = studio.drag;
  if (!d || e.button !== 0) return;
  studio.drag = null;
  if (d.moved) {
    const box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)];
    return prompt({ box, clear_old_points: true });
  }
  const sug = suggestionAt(d.x0, d.y0);
  if (sug) return useSuggestion(sug);
  if (mode() === "box") { drawMarks(); return; }
  return prompt({ points: [[d.x0, d.y0]], labels: [mode() === "negative" ? 0 : 1] });
}

async function onContextMenu(e) {
  e.preventDefault();
  if (!studio.session) return;
  const [x, y] = canvasPoint(e);
  return prompt({ points: [[x, y]], labels: [0] });
}

async function clearFrame() {
  if (!studio.session) return;
  const data = await guarded(() => api("POST", `${sp()}/clear`, { frame: studio.frame, object_id: studio.objectId }));
  if (!data) return;
  studio.frameData = data;
  drawMasks(); drawMarks();
  await reloadSession();
  await refreshTimeline();
}

async function suggest() {
  status("detecting…");
  const data = await guarded(() => api("POST", `${sp()}/suggestions`, { frame: studio.frame }));
  if (!data) return;
  studio.suggestions = data;
  drawMarks();
  status(`${data.suggestions.length} suggestions: click one to make it the selected object's mask`);
}

async function useSuggestion(s) {
  if (studio.objectId == null) await addObject();
  const data = await guarded(() => api("POST", `${sp()}/suggestions/use`, { frame: studio.frame, index: s.index, object_id: studio.objectId }));
  if (!data) return;
  studio.suggestions = null;
  studio.frameData = data;
  drawMasks(); drawMarks();
  await reloadSession();
  await refreshTimeline();
}

// --- propagation --------------------------------------------------------------------------------------------
async function propagate() {
  if (!studio.session) return;
  const body = { direction: $("direction").value, start: $("from-here").checked ? studio.frame : null };
  const job = await guarded(() => api("POST", `${sp()}/propagate`, body));
  if (!job) return;
  pollJob();
}

let polling = false;
async function pollJob() {
  if (polling) return;
  polling = true;
  $("propagate").disabled = true; $("cancel").disabled = false;
  let shown = null;
  try {
    for (;;) {
      const job = await api("GET", `${sp()}/propagate`);
      studio.job = job;
      $("progress").value = job.total ? job.done / job.total : 0;
      $("progress-label").textContent = `${job.state}: ${job.done} / ${job.total} frames` +
        (job.last_frame != null ? ` (frame ${job.last_frame})` : "") + ` · ${job.seconds}s`;
      if ($("preview").checked && job.last_frame != null && job.last_frame !== shown) {
        shown = job.last_frame;
        await showFrame(job.last_frame);
      }
      if (job.state !== "running") break;
      await new Promise((r) => setTimeout(r, 250));
    }
  } catch (e) {
    status(e.message, true);
  } finally {
    polling = false;
    $("propagate").disabled = false; $("cancel").disabled = true;
  }
  const job = studio.job;
  status(job.state === "failed" ? `propagation failed: ${job.error}` : `propagation ${job.state}: ${job.done} frames`,
         job.state === "failed");
  await refreshTimeline();
  await showFrame(studio.frame);
  studio.counts.propagations++;
}

async function cancel() {
  await guarded(() => api("POST", `${sp()}/cancel`));
}

// --- export -------------------------------------------------------------------------------------------------
function renderFormats(formats) {
  const box = $("formats");
  box.innerHTML = "";
  for (const f of formats) {
    const label = document.createElement("label");
    label.title = f.description;
    label.innerHTML = `<input type="checkbox" value="${f.name}"${["davis-png", "overlay-mp4"].includes(f.name) ? " checked" : ""}> ${f.name}`;
    box.appendChild(label);
  }
}

async function exportNow() {
  if (!studio.session) return;
  const formats = [...document.querySelectorAll("#formats input:checked")].map((i) => i.value);
  status("exporting…");
  const data = await guarded(() => api("POST", `${sp()}/export`, { formats }));
  if (!data) return;
  const ul = $("downloads");
  ul.innerHTML = "";
  for (const f of data.files) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = f.url; a.download = f.name; a.textContent = `${f.format}: ${f.name}`;
    li.appendChild(a); ul.appendChild(li);
    a.click(); // the browser's own download
  }
  studio.lastExport = data;
  studio.counts.exports++;
  status(`exported ${data.files.map((f) => f.name).join(", ")}`);
}

// --- layout and keys ----------------------------------------------------------------------------------------
function fitStage() {
  if (!studio.session) return;
  const st = $("stage"), s = studio.session;
  const scale = Math.min(st.clientWidth / s.width, st.clientHeight / s.height);
  for (const id of ["frame", "overlay", "marks"]) {
    $(id).style.width = `${s.width * scale}px`; $(id).style.height = `${s.height * scale}px`;
  }
  drawTimeline();
}

function onKey(e) {
  if (!studio.session || e.target.tagName === "INPUT" && e.target.type === "text") return;
  const step = e.shiftKey ? 10 : 1;
  if (e.key === "ArrowRight") showFrame(studio.frame + step);
  else if (e.key === "ArrowLeft") showFrame(studio.frame - step);
  else if (e.key === "Home") showFrame(0);
  else if (e.key === "End") showFrame(studio.session.num_frames - 1);
  else if (e.key === "n" || e.key === "N") addObject();
  else if (e.key === "Escape" && studio.job && studio.job.state === "running") cancel();
  else if (/^[1-9]$/.test(e.key)) {
    const o = studio.session.objects[Number(e.key) - 1];
    if (o) { studio.objectId = o.id; renderObjects(); }
  } else return;
  e.preventDefault();
}

async function main() {
  const info = await api("GET", "/api/info");
  studio.info = info;
  for (const m of info.models) {
    const opt = document.createElement("option");
    opt.value = m; opt.textContent = m; $("tracker").appendChild(opt);
  }
  $("tracker").value = info.default_model;
  $("suggest").hidden = !info.yolo;
  renderFormats(info.formats);
  $("open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    openSession({ video: $("video-path").value.trim(), model: $("tracker").value });
  });
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    status(`uploading ${file.name}…`);
    const up = await guarded(() => api("POST", "/api/upload", form));
    if (up) await openSession({ video: up.path, model: $("tracker").value });
  });
  $("tracker").addEventListener("change", async () => {
    if (!studio.session) return;
    status(`loading ${$("tracker").value}…`);
    const s = await guarded(() => api("POST", `${sp()}/tracker`, { model: $("tracker").value }));
    if (s) await enter(s);
  });
  $("slider").addEventListener("input", (e) => showFrame(Number(e.target.value)));
  $("prev").addEventListener("click", (e) => showFrame(studio.frame - (e.shiftKey ? 10 : 1)));
  $("next").addEventListener("click", (e) => showFrame(studio.frame + (e.shiftKey ? 10 : 1)));
  $("timeline").addEventListener("click", (e) => {
    if (!studio.session) return;
    const r = e.target.getBoundingClientRect();
    showFrame(Math.floor((e.clientX - r.left) / r.width * studio.session.num_frames));
  });
  const marks = $("marks");
  marks.addEventListener("mousedown", onMouseDown);
  marks.addEventListener("mousemove", onMouseMove);
  window.addEventListener("mouseup", onMouseUp);
  marks.addEventListener("contextmenu", onContextMenu);
  $("add-object").addEventListener("click", addObject);
  $("clear-frame").addEventListener("click", clearFrame);
  $("suggest").addEventListener("click", suggest);
  $("propagate").addEventListener("click", propagate);
  $("cancel").addEventListener("click", cancel);
  $("export").addEventListener("click", exportNow);
  window.addEventListener("keydown", onKey);
  window.addEventListener("resize", fitStage);

  const sid = sessionStorage.getItem(SID_KEY);
  if (sid) {
    const s = await api("GET", `/api/sessions/${sid}`).catch(() => null);
    if (s) { await enter(s); studio.ready = true; return; }
    sessionStorage.removeItem(SID_KEY);
  }
  if (info.video) await openSession({ video: info.video, model: info.default_model, resume: true });
  else loadSaved();
  studio.ready = true;
}

main().catch((e) => { status(e.message, true); studio.ready = true; });
