// The explanation page: sends one photo to POST /v1/explain and draws what comes back.
// Boxes are drawn in uploaded-photo pixel coordinates (the API's), on an SVG whose viewBox is the photo's size.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const KEY_STORE = "triage-api-key";

const state = { result: null, busy: false };

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message;
}

function percent(value) {
  return `${(100 * value).toFixed(1)}%`;
}

function drawBox(rect, box) {
  const [x0, y0, x1, y1] = box;
  rect.setAttribute("x", x0);
  rect.setAttribute("y", y0);
  rect.setAttribute("width", Math.max(0, x1 - x0));
  rect.setAttribute("height", Math.max(0, y1 - y0));
  rect.dataset.box = box.join(",");
  rect.style.display = "";
}

function hideBox(rect) {
  rect.style.display = "none";
  delete rect.dataset.box;
}

function cellBox(layer, y, x) {
  const xs = layer.cell_boxes.x[x];
  const ys = layer.cell_boxes.y[y];
  return [xs[0], ys[0], xs[1], ys[1]];
}

function selectCell(layer, channel, y, x, tile) {
  const box = cellBox(layer, y, x);
  const rect = $("cell-box");
  drawBox(rect, box);
  rect.dataset.layer = layer.name;
  rect.dataset.channel = channel.index;
  rect.dataset.cell = `${y},${x}`;
  document.querySelectorAll(".tile .mark").forEach((m) => (m.hidden = true));
  const mark = tile.querySelector(".mark");
  const img = tile.querySelector("img");
  const [, h, w] = layer.shape;
  const cw = img.clientWidth / w;
  const ch = img.clientHeight / h;
  Object.assign(mark.style, { left: `${x * cw}px`, top: `${y * ch}px`, width: `${cw}px`, height: `${ch}px` });
  mark.hidden = false;
  $("cell-info").textContent =
    `${layer.name}, channel ${channel.index}, cell (${y}, ${x}): receptive field [${box.join(", ")}] in photo ` +
    `pixels (a ${layer.receptive_field.size}-pixel square of the network input).`;
}

function cellAt(event, img, layer) {
  const [, h, w] = layer.shape;
  const bounds = img.getBoundingClientRect();
  const x = Math.min(w - 1, Math.max(0, Math.floor(((event.clientX - bounds.left) / bounds.width) * w)));
  const y = Math.min(h - 1, Math.max(0, Math.floor(((event.clientY - bounds.top) / bounds.height) * h)));
  return [y, x];
}

function renderTile(layer, channel) {
  const tile = document.createElement("figure");
  tile.className = "tile";
  tile.dataset.layer = layer.name;
  tile.dataset.channel = channel.index;
  const map = document.createElement("div");
  map.className = "map";
  const img = document.createElement("img");
  const [, h, w] = layer.shape;
  img.width = w * layer.upscale;
  img.height = h * layer.upscale;
  img.alt = `${layer.name} channel ${channel.index}`;
  img.src = `data:image/png;base64,${channel.png}`;
  const mark = document.createElement("div");
  mark.className = "mark";
  mark.hidden = true;
  map.append(img, mark);
  const pick = (event) => selectCell(layer, channel, ...cellAt(event, img, layer), tile);
  img.addEventListener("click", pick);
  img.addEventListener("mousemove", pick);
  const caption = document.createElement("figcaption");
  caption.textContent = `ch ${channel.index}: max ${channel.max.toFixed(2)}, ${percent(channel.fraction_active)} active`;
  tile.append(map, caption);
  return tile;
}

// Which cell an effective receptive field is of: the strongest, or (when that one sits at its ReLU6 cap, where no
// pixel moves it) the cell the answer chose instead and why.
function erfCell(erf) {
  if (!erf.cell_chosen_because) return "the strongest cell";
  return `cell (${erf.cell.join(", ")}), value ${erf.value.toFixed(2)} (${erf.cell_chosen_because})`;
}

function renderLayer(layer) {
  const section = document.createElement("section");
  section.className = "layer";
  section.dataset.layer = layer.name;
  const title = document.createElement("h2");
  const [c, h, w] = layer.shape;
  title.textContent = `${layer.name}: ${c} channels of ${h}\u00d7${w}`;
  const what = document.createElement("p");
  what.className = "stage-about";
  what.textContent = layer.about;
  const about = document.createElement("p");
  about.className = "hint";
  const rf = layer.receptive_field;
  about.textContent =
    `Each cell sees a ${rf.size}\u00d7${rf.size} square of the network input; neighbouring cells are ${rf.jump} ` +
    `pixels apart. Strongest cell: channel ${layer.argmax.channel}, cell (${layer.argmax.cell.join(", ")}). ` +
    "Point at a cell to see its receptive field on the photo.";
  const tiles = document.createElement("div");
  tiles.className = "tiles";
  for (const channel of layer.channels) tiles.append(renderTile(layer, channel));
  section.append(title, what, about, tiles);
  if (layer.erf) {
    const erf = document.createElement("figure");
    erf.className = "erf";
    const img = document.createElement("img");
    img.alt = `${layer.name} effective receptive field`;
    img.src = `data:image/png;base64,${layer.erf.png}`;
    img.title = `photo box [${layer.erf.box.join(", ")}]`;
    const caption = document.createElement("figcaption");
    caption.className = "hint";
    caption.textContent = layer.erf.mass_in_box === null
      ? `Effective receptive field: none, this cell's value ${layer.erf.flat_because}, so no photo pixel moves it.`
      : `Effective receptive field of ${erfCell(layer.erf)}, over its whole theoretical box (photo pixels ` +
        `[${layer.erf.box.join(", ")}]): ${percent(layer.erf.mass_in_centre)} of its influence ` +
        `comes from the central ${percent(layer.erf.centre_area)} of its theoretical box; 90% from within ` +
        `${layer.erf.radius90} of the box's ${layer.erf.box_half_side} network-input pixels around its centre.`;
    const showBox = () => {
      drawBox($("cell-box"), layer.erf.box);
      $("cell-info").textContent = `${layer.name}: theoretical receptive field of ${erfCell(layer.erf)}, ` +
        `[${layer.erf.box.join(", ")}] in photo pixels.`;
    };
    img.addEventListener("mouseenter", showBox);
    img.addEventListener("click", showBox);
    erf.append(img, caption);
    section.append(erf);
  }
  return section;
}

// The class a photo leans to: the most probable one (what it would be routed to with a confident enough model).
function leaning(probabilities) {
  return Object.entries(probabilities).reduce((best, entry) => (entry[1] > best[1] ? entry : best))[0];
}

// " (confidence 99.1%)" for a routed photo; for one sent to review, which class it leans to and by how much it
// missed the threshold it needed.
function confidenceText(result) {
  if (result.route !== "needs_review") return ` (confidence ${percent(result.confidence)})`;
  const threshold = typeof result.review_threshold === "number"
    ? `, below the ${percent(result.review_threshold)} threshold` : "";
  return `: leans ${leaning(result.probabilities)} at ${percent(result.confidence)}${threshold}`;
}

// Forget the shown result: after a failed upload nothing below the error may read as the new photo's result.
function clearResult() {
  state.result = null;
  $("result").hidden = true;
  $("layers").replaceChildren();
  $("overlay").removeAttribute("src");
  for (const id of ["peak-box", "peak-field", "cell-box"]) hideBox($(id));
  for (const id of ["route", "confidence", "probabilities", "model", "network", "cam-caption", "cell-info", "photo-name"]) {
    $(id).textContent = "";
  }
  delete $("route").dataset.route;
}

function render(result, fileName) {
  state.result = result;
  $("photo-name").textContent = fileName;
  const route = $("route");
  route.textContent = result.route.replace("_", " ");
  route.className = result.route;
  route.dataset.route = result.route;
  $("confidence").textContent = confidenceText(result);
  $("probabilities").textContent = Object.entries(result.probabilities)
    .map(([name, p]) => `${name}: ${percent(p)}`).join(" \u00b7 ");
  const net = result.network;
  $("model").textContent = `${result.model.name} ${result.model.version} on ${result.provider}` +
    (result.timings_ms ? `, ${Math.round(result.timings_ms.explain || 0)} ms to explain` : "");
  $("network").textContent = `Network: ${net.name}, ${net.input_size}\u00d7${net.input_size} input, ` +
    `${net.stages.length} stages (${net.stages.join(", ")}).`;
  const photo = result.photo;
  const svg = $("boxes");
  svg.setAttribute("viewBox", `0 0 ${photo.width} ${photo.height}`);
  const overlay = $("overlay");
  overlay.width = result.display.width;
  overlay.height = result.display.height;
  overlay.src = `data:image/png;base64,${result.cam.overlay_png}`;
  const peak = result.cam.peak;
  const footprint = peak.footprint || peak.box;
  drawBox($("peak-box"), footprint);
  drawBox($("peak-field"), peak.box);
  hideBox($("cell-box"));
  $("cam-caption").textContent =
    `Class-activation map for ${result.cam.class} on ${result.cam.layer} (${result.cam.about}); peak cell ` +
    `(${peak.cell.join(", ")}) sits at photo box [${footprint.join(", ")}] and sees ` +
    `[${peak.box.join(", ")}], its receptive field.`;
  $("cell-info").textContent = "";
  const layers = $("layers");
  layers.replaceChildren(...result.layers.map(renderLayer));
  $("result").hidden = false;
}

async function explain(file) {
  if (state.busy) return;
  state.busy = true;
  showError("");
  setStatus(`Explaining ${file.name}\u2026`);
  const key = $("api-key").value.trim();
  sessionStorage.setItem(KEY_STORE, key);
  const params = new URLSearchParams({ channels: $("channels").value || "4", maps: "png" });
  if ($("erf").checked) params.set("erf", "true");
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const response = await fetch(`/v1/explain?${params}`, {
      method: "POST",
      body,
      headers: key ? { "X-API-Key": key } : {},
    });
    const text = await response.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : text || response.statusText;
      throw new Error(`The service answered ${response.status}: ${detail}`);
    }
    if (!data) throw new Error("The service's answer was not JSON.");
    render(data, file.name);
    setStatus(`${file.name}: explained.`);
  } catch (error) {
    setStatus("");
    clearResult();
    const reason = error instanceof TypeError ? `Could not reach the service: ${error.message}` : error.message;
    showError(`${file.name}: ${reason}`);
  } finally {
    state.busy = false;
  }
}

// The report needs the API key like the rest of /v1, which a plain link cannot send: fetch it, then show it.
async function openReport(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  const shown = window.open("", "_blank");
  try {
    const response = await fetch("/v1/model/report", { headers: key ? { "X-API-Key": key } : {} });
    if (!response.ok) {
      const text = await response.text();
      let detail = text;
      try {
        detail = JSON.parse(text).detail || text;
      } catch {
        // not JSON: keep the text
      }
      throw new Error(`The service answered ${response.status}: ${detail}`);
    }
    const url = URL.createObjectURL(new Blob([await response.text()], { type: "text/html" }));
    if (shown) shown.location = url;
  } catch (error) {
    if (shown) shown.close();
    showError(`Training report: ${error.message}`);
  }
}

function setUp() {
  $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("report-link").addEventListener("click", openReport);
  const input = $("file");
  const drop = $("drop");
  input.addEventListener("change", () => {
    if (input.files.length) explain(input.files[0]);
    input.value = "";
  });
  drop.addEventListener("click", (event) => {
    if (event.target.tagName !== "LABEL") input.click();
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") input.click();
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const files = event.dataTransfer.files;
    if (files.length !== 1) {
      showError(files.length ? "Drop one photo at a time." : "That was not a file.");
      return;
    }
    explain(files[0]);
  });
  // A photo dropped next to the drop zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

setUp();
