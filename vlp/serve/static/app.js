// The page of `vlp serve`: no library, no network beyond this server's own API.
// One panel per task in /api/health's "tasks"; a task is one panel (index.html) and, here,
// a `submitter` for its form and a function that shows its result.
"use strict";

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                "#f032e6", "#9a6324", "#000075", "#808000"];
const SVG = "http://www.w3.org/2000/svg";
const state = { health: null, image: null, name: "", token: 0 };
const $ = (id) => document.getElementById(id);

async function getJSON(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${response.statusText}`);
  return response.json();
}

async function post(path, fields) {
  const form = new FormData();
  form.append("image", state.image, state.name);
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  const response = await fetch(path, { method: "POST", body: form });
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  }
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function clearResults() {
  for (const id of ["caption", "n-best", "answer", "answers", "located", "places", "overlay",
                    "region-count"]) {
    $(id).replaceChildren();
  }
  $("region-label")?.remove();
}

async function useImage(blob, name) {
  state.image = blob;
  state.name = name;
  const token = ++state.token;
  clearResults();
  showError("");
  $("stage").hidden = true;
  if ($("picture").src) URL.revokeObjectURL($("picture").src);
  $("picture").src = URL.createObjectURL(blob);
  await captionImage(token);
}

async function captionImage(token) {
  try {
    const result = await post("/api/caption", { n_best: state.health.beam_size });
    if (token !== state.token) return;
    $("stage").hidden = false;
    drawRegions(result.regions, result.width, result.height);
    showCaption(result);
  } catch (err) {
    if (token === state.token) showError(err.message);
  }
}

function showCaption(result) {
  $("caption").textContent = result.caption;
  const items = result.n_best.map((c) =>
    scoredItem(c.caption, c.score === null ? "" : `log p ${c.score.toFixed(2)}`));
  $("n-best").replaceChildren(...items);
}

// A list item: the text, then (optionally) a bar, then the score.
function scoredItem(text, score, bar = null) {
  const li = document.createElement("li");
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  const figure = document.createElement("span");
  figure.className = "score";
  figure.textContent = score;
  li.append(span, " ", ...(bar ? [bar, " "] : []), figure);
  return li;
}

function drawRegions(regions, width, height) {
  const svg = $("overlay");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const small = Math.max(width, height) < 320;
  $("picture").classList.toggle("pixelated", small);
  const shapes = regions.map((r, i) => regionShape(r, i, width, height));
  svg.replaceChildren(...shapes);
  const labels = regions.map((r) => r.label).join(", ");
  const count = `${regions.length} region${regions.length === 1 ? "" : "s"}`;
  $("region-count").textContent = `${count}${labels ? ": " + labels : ""} (hover a box for its label)`;
}

function regionShape(region, index, width, height) {
  const [x1, y1, x2, y2] = region.box;
  const group = document.createElementNS(SVG, "g");
  group.setAttribute("class", "region");
  const rect = document.createElementNS(SVG, "rect");
  const attrs = { x: x1, y: y1, width: Math.max(x2 - x1, 1), height: Math.max(y2 - y1, 1) };
  for (const [key, value] of Object.entries(attrs)) rect.setAttribute(key, value);
  rect.setAttribute("stroke", COLORS[index % COLORS.length]);
  rect.setAttribute("vector-effect", "non-scaling-stroke");
  const title = document.createElementNS(SVG, "title");
  title.textContent = `${region.label} (${region.score.toFixed(2)})`;
  group.append(rect, title);
  group.addEventListener("mouseenter", () => showLabel(title.textContent, x1 / width, y1 / height));
  group.addEventListener("mouseleave", () => $("region-label")?.remove());
  return group;
}

function showLabel(text, left, top) {
  $("region-label")?.remove();
  const label = document.createElement("span");
  label.id = "region-label";
  label.textContent = text;
  label.style.left = `${(left * 100).toFixed(2)}%`;
  label.style.top = `${(top * 100).toFixed(2)}%`;
  $("stage").append(label);
}

// A form of a panel: post its text field to `path`, clear `outputs` first, then `show`.
function submitter(path, field, outputs, show) {
  return async (event) => {
    event.preventDefault();
    if (!state.image) {
      showError("choose an image first");
      return;
    }
    const token = state.token;
    for (const id of outputs) $(id).replaceChildren();
    try {
      const result = await post(path, { [field]: $(field).value, top: 3 });
      if (token !== state.token) return;
      showError("");
      show(result);
    } catch (err) {
      if (token === state.token) showError(err.message);
    }
  };
}

// A bar for a probability.
function meter(value) {
  const bar = document.createElement("meter");
  bar.min = 0;
  bar.max = 1;
  bar.value = value;
  return bar;
}

function showAnswers(result) {
  $("answer").textContent = result.answer;
  const items = result.candidates.map((c) =>
    scoredItem(c.answer, c.score.toFixed(3), meter(c.score)));
  $("answers").replaceChildren(...items);
}

// The region found gets a thick box of its own over the detected ones.
function showPlaces(result) {
  const [x1, y1, x2, y2] = result.box;
  $("located").textContent = `${result.candidates[0].label} at ` +
    `[${x1}, ${y1}, ${x2}, ${y2}]`;
  const items = result.candidates.map((c) =>
    scoredItem(`${c.label} [${c.box.join(", ")}]`, c.probability.toFixed(3),
               meter(c.probability)));
  $("places").replaceChildren(...items);
  $("found")?.remove();
  const rect = document.createElementNS(SVG, "rect");
  rect.id = "found";
  const attrs = { x: x1, y: y1, width: Math.max(x2 - x1, 1), height: Math.max(y2 - y1, 1) };
  for (const [key, value] of Object.entries(attrs)) rect.setAttribute(key, value);
  rect.setAttribute("vector-effect", "non-scaling-stroke");
  $("overlay").append(rect);
}

async function showExamples() {
  const examples = await getJSON("/api/examples");
  const buttons = examples.map((ex) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.title = ex.name;
    const thumb = document.createElement("img");
    thumb.src = ex.image;
    thumb.alt = ex.name;
    button.append(thumb);
    button.addEventListener("click", async () => {
      const response = await fetch(ex.image);
      await useImage(await response.blob(), ex.name);
    });
    return button;
  });
  $("example-list").replaceChildren(...buttons);
  $("examples").hidden = examples.length === 0;
}

async function start() {
  state.health = await getJSON("/api/health");
  for (const panel of document.querySelectorAll(".panel")) {
    panel.hidden = !state.health.tasks.includes(panel.dataset.task);
  }
  const mb = state.health.max_upload_bytes / 2 ** 20;
  const mp = state.health.max_pixels / 1e6;
  $("limits").textContent = `up to ${mb} MB and ${mp} megapixels`;
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) useImage(file, file.name);
  });
  $("ask-form").addEventListener("submit",
    submitter("/api/ask", "question", ["answer", "answers"], showAnswers));
  $("locate-form").addEventListener("submit",
    submitter("/api/locate", "expression", ["located", "places"], showPlaces));
  await showExamples();
  document.body.dataset.ready = "true";
}

start().catch((err) => showError(err.message));
