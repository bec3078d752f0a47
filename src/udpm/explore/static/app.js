// udpm explore: the page. It only calls the server's /api; all sampling happens there.
// Slider events are coalesced here too: one render request in flight at a time, and when
// it returns, one more with the newest slider state if anything moved meanwhile.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null, session: null, start: 0, perPage: 16,
  sliders: {}, mix: 0, picking: null, version: 0,          // picking: null | {kind: "swap", level} | {kind: "partner"}
  inFlight: false, dirty: false, firstUnshown: null,
  latencies: [],                               // ms from a slider event to its image on screen
};
window.udpmExplore = state;                    // read by the browser test and the benchmark

async function api(path, body, options = {}) {
  const init = body === undefined ? { method: options.method || "GET" } : {
    method: "POST",
    headers: { "Content-Type": options.raw ? "application/octet-stream" : "application/json" },
    body: options.raw ? body : JSON.stringify({ session: state.session, ...body }),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").style.color = isError ? "#ef9a9a" : "#ffcc80";
}

async function guarded(label, work) {
  status(label + "…");
  try { await work(); status(""); } catch (err) { status(err.message, true); }
}

// ---- the grid of samples ---------------------------------------------------------
function classParam() {
  const value = $("class").value;
  return value === "" ? null : Number(value);
}

async function loadGrid() {
  const cls = classParam();
  const query = `start=${state.start}&n=${state.perPage}` + (cls === null ? "" : `&class=${cls}`);
  const data = await api(`/api/grid?${query}`);
  const grid = $("grid");
  grid.replaceChildren(...data.images.map(({ seed, src }) => {
    const img = new Image();
    img.src = src; img.alt = `seed ${seed}`; img.title = `seed ${seed}`; img.dataset.seed = seed;
    img.addEventListener("click", () => chooseFromGrid(seed));
    return img;
  }));
  $("start").value = state.start;
}

function chooseFromGrid(seed) {
  const pick = state.picking;
  setPicking(null);
  const cls = classParam();
  if (!pick) {
    guarded(`loading seed ${seed}`, async () => {
      showFull(await api("/api/select", { seed, class: cls }));
      for (const img of $("grid").children) img.classList.toggle("chosen", Number(img.dataset.seed) === seed);
    });
  } else if (pick.kind === "swap") {
    guarded(`taking level ${pick.level} from seed ${seed}`,
      async () => showFull(await api("/api/swap", { level: pick.level, seed, class: cls })));
  } else {
    guarded("setting the second image", async () => {
      const data = await api("/api/partner", { seed, class: cls });
      showFrame(data);
      setPartner(seed);
    });
  }
}

function setPicking(pick) {
  state.picking = pick;
  $("grid").classList.toggle("picking", !!pick);
  $("pick-hint").hidden = !pick;
  if (pick) {
    $("pick-hint").textContent = pick.kind === "swap"
      ? `Click the image whose level-${pick.level} map to take (Esc: cancel).`
      : "Click the second image (Esc: cancel).";
  }
}

// ---- the image being explored ----------------------------------------------------
function showFrame(data) {
  $("image").src = data.image;
  const previews = $("previews");
  if (previews.children.length !== data.previews.length) {
    previews.replaceChildren(...data.previews.map(({ level }) => {
      const fig = document.createElement("figure");
      const img = new Image(); img.alt = `level ${level} preview`;
      const cap = document.createElement("figcaption");
      cap.textContent = level === 1 ? "level 1 (the image)" : `level ${level}`;
      fig.append(img, cap);
      return fig;
    }));
  }
  data.previews.forEach(({ src }, i) => { previews.children[i].querySelector("img").src = src; });
}

function showFull(data) {
  state.sliders = {}; state.mix = 0; state.dirty = false;
  $("explore").hidden = false;
  showFrame(data);
  state.version = data.version;
  buildLevels(data.version);
  setPartner(null);
  $("provenance").textContent = data.seed === null ? "(edited)" : `(seed ${data.seed})`;
  const q = `?session=${encodeURIComponent(state.session)}`;
  $("download-png").href = "/api/image.png" + q;
  $("download-latent").href = "/api/latent" + q;
}

function buildLevels(version) {
  // One box per level, coarse first; the sliders arrive level by level (coarse levels in
  // a fraction of a second, the finest in a few seconds) and appear as they do.
  const box = $("levels");
  box.replaceChildren();
  const L = state.info.levels;
  for (let level = L; level >= 1; level--) {
    const node = $("level-template").content.firstElementChild.cloneNode(true);
    node.dataset.level = level;
    const what = level === L ? "coarse: layout, colours" : level === 1 ? "finest: detail" : "";
    node.querySelector("legend").textContent = `Level ${level}` + (what ? ` (${what})` : "");
    node.querySelector(".sliders").textContent = "computing the principal directions…";
    node.querySelector(".redraw").addEventListener("click", () => guarded(`re-drawing level ${level}`,
      async () => showFull(await api("/api/redraw", { level }))));
    node.querySelector(".swap").addEventListener("click", () => setPicking({ kind: "swap", level }));
    node.querySelector(".reset").addEventListener("click", () => {
      if (!state.sliders[level]) return;
      node.querySelectorAll("input").forEach((i) => { i.value = 0; i.nextSibling.textContent = "0.00"; });
      state.sliders[level] = state.sliders[level].map(() => 0);
      requestRender();
    });
    box.append(node);
  }
  loadDirections(version);
}

async function loadDirections(version) {
  for (let level = state.info.levels; level >= 1; level--) {
    let data;
    try {
      data = await api("/api/directions", { level });
    } catch (err) { status(err.message, true); return; }
    if (data.version !== version || state.version !== version) return;  // a newer base
    addSliders(level, data.gains);
  }
}

function addSliders(level, gains) {
  const holder = $("levels").querySelector(`fieldset[data-level="${level}"] .sliders`);
  holder.replaceChildren();
  const limit = state.info.slider_limit;
  state.sliders[level] = gains.map(() => 0);
  gains.forEach((gain, k) => {
    const label = document.createElement("label");
    label.className = "slider";
    label.title = `principal direction ${k + 1}; image change ${gain.toFixed(2)} per unit`;
    const input = Object.assign(document.createElement("input"), {
      type: "range", min: -limit, max: limit, step: 0.05, value: 0,
    });
    input.dataset.level = level; input.dataset.k = k;
    input.setAttribute("aria-label", `level ${level} direction ${k + 1}`);
    const out = document.createElement("output");
    out.textContent = "0.00";
    input.addEventListener("input", () => {
      state.sliders[level][k] = Number(input.value);
      out.textContent = Number(input.value).toFixed(2);
      requestRender();
    });
    label.append(`d${k + 1}`, input, out);
    holder.append(label);
  });
}

function setPartner(seed) {
  $("partner-info").textContent = seed === null ? "none" : `seed ${seed}`;
  $("mix").disabled = seed === null;
  $("stop-partner").hidden = seed === null;
  $("mix").value = 0; $("mix-value").textContent = "0.00"; state.mix = 0;
}

// ---- live rendering, coalesced ---------------------------------------------------
function requestRender() {
  if (state.firstUnshown === null) state.firstUnshown = performance.now();
  if (state.inFlight) { state.dirty = true; return; }
  sendRender();
}

async function sendRender() {
  state.inFlight = true; state.dirty = false;
  const since = state.firstUnshown;
  state.firstUnshown = null;
  try {
    const data = await api("/api/render", { sliders: state.sliders, mix: state.mix });
    if (!data.superseded) {
      showFrame(data);
      await $("image").decode().catch(() => {});
      const ms = performance.now() - since;
      state.latencies.push(ms);
      $("latency").textContent = `${ms.toFixed(0)} ms from slider to image`;
    }
  } catch (err) {
    status(err.message, true);
  } finally {
    state.inFlight = false;
    if (state.dirty) sendRender();
  }
}

// ---- wiring ----------------------------------------------------------------------
async function main() {
  state.info = await api("/api/info");
  const { info } = state;
  const shape = info.image_shape;
  $("model-info").textContent = `UDPM, ${shape[1]}×${shape[2]} px, ${info.levels} levels` +
    (info.step ? `, step ${info.step}` : "");
  if (info.classes) {
    $("class-row").hidden = false;
    for (let c = 0; c < info.classes; c++) {
      const name = info.class_names ? info.class_names[c] : `class ${c}`;
      $("class").append(new Option(name, c));
    }
  }
  state.session = (await api("/api/session", {})).session;
  $("prev").addEventListener("click", () => { state.start = Math.max(0, state.start - state.perPage); guarded("loading", loadGrid); });
  $("next").addEventListener("click", () => { state.start += state.perPage; guarded("loading", loadGrid); });
  $("go").addEventListener("click", () => { state.start = Math.max(0, Number($("start").value) || 0); guarded("loading", loadGrid); });
  $("class").addEventListener("change", () => guarded("loading", loadGrid));
  $("keep").addEventListener("click", () => guarded("keeping this image",
    async () => showFull(await api("/api/keep", {}))));
  $("pick-partner").addEventListener("click", () => setPicking({ kind: "partner" }));
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") setPicking(null); });
  $("stop-partner").addEventListener("click", () => guarded("stopping",
    async () => { showFrame(await api("/api/partner", { seed: null })); setPartner(null); }));
  $("mix").addEventListener("input", () => {
    state.mix = Number($("mix").value);
    $("mix-value").textContent = state.mix.toFixed(2);
    requestRender();
  });
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (!file) return;
    if (file.size > info.max_upload_bytes) { status(`file too large (limit ${info.max_upload_bytes} bytes)`, true); return; }
    guarded("reading the latent", async () => {
      const q = `?session=${encodeURIComponent(state.session)}`;
      showFull(await api("/api/upload" + q, file, { raw: true }));
    });
    $("upload").value = "";
  });
  await guarded("loading", loadGrid);
  document.body.dataset.ready = "1";
}

main().catch((err) => status(err.message, true));
