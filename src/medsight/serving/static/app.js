// medsight web page: upload one image, show the decision, probabilities and the heat-map.
// Self-contained (no CDN); server text is always set with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function callApi(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const why = body && body.detail ? `${body.error}: ${body.detail}` : `HTTP ${response.status}`;
    throw new Error(why);
  }
  return body;
}

function percent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

async function loadModel() {
  try {
    const model = await callApi("/v1/model");
    const classes = model.class_names.join(", ");
    $("model-info").textContent =
      `Model ${model.model_name} (recipe ${model.recipe || "custom"}, classes ${classes}, ` +
      `medsight ${model.medsight_version || "?"}, created ${model.created || "?"})`;
    // the card opens with the Hugging Face Hub's YAML metadata: show the Markdown after it
    const card = (model.model_card || "").replace(/^---\n[\s\S]*?\n---\n+/, "");
    $("model-card").textContent = card || "No model card in this bundle.";
    const select = $("method");
    select.replaceChildren();
    for (const name of model.serving.explain_methods) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      select.append(option);
    }
    select.value = "gradcam";
  } catch (err) {
    $("model-info").textContent = `Model description unavailable (${err.message}).`;
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function render(data) {
  const p = data.prediction;
  // an image unlike the training images gets a plain warning instead of a confident decision
  const outside = p.in_domain === false;
  $("domain-warning").textContent = p.domain_warning || "";
  $("domain-warning").hidden = !p.domain_warning;
  // a multi-label model decides each label at its own threshold: its findings, or none
  const multi = p.thresholds != null;
  const decision = multi && p.findings.length ? `Findings: ${p.findings.join(", ")}` : p.decision;
  $("decision").textContent = outside ? "No decision: image out of domain" : decision;
  $("decision").classList.toggle("out-of-domain", outside);
  $("positive-class").textContent =
    p.positive_class || (multi ? "the most probable label" : "the predicted class");
  const shown = p.positive_probability ?? Math.max(...Object.values(p.probabilities));
  $("positive-probability").textContent = percent(shown);
  $("threshold").textContent = multi
    ? "each label its own (in the table)"
    : p.threshold === null ? "none (most probable class)" : percent(p.threshold);
  $("threshold-rule").textContent = p.threshold_rule && !multi ? `(${p.threshold_rule})` : "";
  const rows = Object.entries(p.probabilities).map(([name, prob]) => {
    const row = document.createElement("tr");
    const label = document.createElement("td");
    label.textContent = multi ? `${name} (threshold ${percent(p.thresholds[name])})` : name;
    const cell = document.createElement("td");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = percent(prob).replace(" ", "");
    const text = document.createElement("span");
    text.textContent = percent(prob);
    cell.append(bar, text);
    row.append(label, cell);
    return row;
  });
  $("probabilities").tBodies[0].replaceChildren(...rows);
  $("image").src = `data:image/png;base64,${data.image_png_base64}`;
  $("overlay").src = `data:image/png;base64,${data.overlay_png_base64}`;
  $("explained").textContent = `${data.method} for ${data.target_class} (layer ${data.layer})`;
  $("faithfulness").textContent =
    data.faithfulness === null ? "not available" : data.faithfulness.toFixed(3);
  $("timing").textContent = `${data.timing_ms.total.toFixed(0)} ms`;
  $("result").hidden = false;
}

async function analyse(file) {
  if (!file) return;
  showError("");
  $("status").textContent = `Analysing ${file.name}…`;
  const form = new FormData();
  form.append("file", file);
  form.append("method", $("method").value);
  try {
    render(await callApi("/v1/explain", { method: "POST", body: form }));
    $("status").textContent = `Result for ${file.name}.`;
  } catch (err) {
    $("status").textContent = "";
    showError(err.message);
  }
}

function updateOverlay() {
  $("overlay").classList.toggle("hidden", !$("show-overlay").checked);
  $("overlay").style.opacity = String($("opacity").value / 100);
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", () => {
    analyse($("file").files[0]);
    $("file").value = ""; // choosing the same file again analyses it again
  });
  $("api-key").addEventListener("change", loadModel);
  $("show-overlay").addEventListener("change", updateOverlay);
  $("opacity").addEventListener("input", updateOverlay);
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("active");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("active"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    analyse(event.dataTransfer.files[0]);
  });
  loadModel();
});
