/* steering-service dashboard: a single page over the service's own HTTP API.
 *
 * No build step and no dependencies: plain DOM, fetch, and charts drawn as inline SVG below.
 * Routes (location.hash): #/jobs, #/jobs/{id}, #/adapters/{id or name@version}.
 * Every request goes to the API relative to this page (…/dashboard -> …/v1/...) and carries
 * "Authorization: Bearer <key>" when a key is saved in the header field (localStorage).
 */
"use strict";

(function () {
  const KEY_STORAGE = "steer.dashboard.apiKey";
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const JOBS_REFRESH_MS = 2000;
  const JOB_REFRESH_MS = 1500;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = { train_loss: "#2563eb", valid_loss: "#ea580c", valid_accuracy: "#16a34a" };

  // ---------------------------------------------------------------------------------------
  // DOM helpers

  /** el("div", {class: "x", dataset: {testid: "y"}, onclick: fn}, child, "text", ...) */
  function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svgEl(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else if (name === "testid") {
        node.setAttribute("data-testid", value);
      } else if (name === "text") {
        node.textContent = value;
      } else {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Replace node's children; null, undefined and false children are left out. */
  function put(node, ...children) {
    node.replaceChildren(
      ...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false),
    );
  }

  function fmt(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    if (typeof value !== "number") return String(value);
    if (value === 0) return "0";
    const abs = Math.abs(value);
    if (Number.isInteger(value) && abs < 1e6) return String(value);
    if (abs >= 1e4 || abs < 1e-3) return value.toExponential(2);
    return String(Number(value.toPrecision(3)));
  }

  function fmtInt(value) {
    return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
  }

  function fmtBytes(value) {
    if (value === null || value === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = value;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${i === 0 ? v : v.toFixed(1)} ${units[i]} (${fmtInt(value)} bytes)`;
  }

  function fmtTime(unix) {
    if (!unix) return "—";
    return new Date(unix * 1000).toLocaleString();
  }

  function fmtClock(unix) {
    if (!unix) return "";
    return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
  }

  function badge(status) {
    return el("span", { class: `badge badge-${status}`, testid: "status-badge" }, status);
  }

  function facts(rows) {
    return el(
      "dl",
      { class: "facts" },
      rows.map(([label, value, testid]) => [
        el("dt", {}, label),
        el("dd", { testid }, value === null || value === undefined ? "—" : value),
      ]),
    );
  }

  function note(text, testid) {
    return el("p", { class: "note", testid }, text);
  }

  /** A chart-sized placeholder with the chart's title and why nothing is drawn. */
  function emptyChart(title, text, testid) {
    return el("div", { class: "chart-empty" }, el("div", { class: "chart-title" }, title), note(text, testid));
  }

  // ---------------------------------------------------------------------------------------
  // API access, the key, and the error banner

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function apiKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch (_e) {
      return "";
    }
  }

  function apiUrl(path) {
    return path.replace(/^\//, ""); // relative to the page: <root>/dashboard -> <root>/v1/...
  }

  async function request(path, { method = "GET", json, body } = {}) {
    const headers = {};
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let payload = body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(apiUrl(path), { method, headers, body: payload, cache: "no-store" });
    } catch (exc) {
      throw new ApiError(0, `network error: ${exc.message}`, "network_error");
    }
    if (!response.ok) {
      let message = response.statusText || "request failed";
      let code = null;
      try {
        const data = await response.json();
        if (data && data.error && data.error.message) {
          message = data.error.message;
          code = data.error.code || null;
        }
      } catch (_e) {
        /* not JSON */
      }
      throw new ApiError(response.status, message, code);
    }
    return response;
  }

  async function api(path, options) {
    return (await request(path, options)).json();
  }

  let errorSource = null;

  function showError(exc, source) {
    const banner = document.getElementById("error-banner");
    const status = exc instanceof ApiError && exc.status ? `${exc.status} ` : "";
    const code = exc instanceof ApiError && exc.code ? `(${exc.code}) ` : "";
    document.getElementById("error-text").textContent =
      `Error ${status}${code}: ${exc.message || exc}`.replace(" :", ":");
    banner.hidden = false;
    errorSource = source || "action";
  }

  /** Hide the banner if it shows an error of this source (all errors when source is omitted). */
  function clearError(source) {
    if (source && errorSource !== source) return;
    document.getElementById("error-banner").hidden = true;
    errorSource = null;
  }

  // ---------------------------------------------------------------------------------------
  // Router and polling: one view at a time; a new route stops the old view's timers.

  let generation = 0;
  let timer = null;

  function current(gen) {
    return gen === generation;
  }

  /** Run fn now and every ms until it returns false or the route changes. A poll that
   * succeeds clears a banner left by an earlier failed poll. */
  function poll(gen, ms, fn) {
    const tick = async () => {
      if (!current(gen)) return;
      let again = true;
      try {
        again = (await fn()) !== false;
        if (current(gen)) clearError("poll");
      } catch (exc) {
        if (current(gen)) showError(exc, "poll");
      }
      if (again && current(gen)) timer = setTimeout(tick, ms);
    };
    tick();
  }

  function route() {
    generation += 1;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    clearError("poll");
    const hash = location.hash || "#/jobs";
    const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    const view = document.getElementById("view");
    put(view);
    const gen = generation;
    if (parts[0] === "jobs" && parts.length > 1) {
      jobPage(view, gen, parts.slice(1).join("/"));
    } else if (parts[0] === "adapters" && parts.length > 1) {
      adapterPage(view, gen, parts.slice(1).join("/"));
    } else {
      jobsPage(view, gen);
    }
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.getAttribute("href") === `#/${parts[0] || "jobs"}`);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Downloads: a plain link without a key; with one, fetch with the header and save a Blob.

  async function downloadAdapter(reference, button) {
    const path = `v1/adapters/${encodeURIComponent(reference)}/content`;
    const link = el("a", { download: "", style: "display:none" });
    let objectUrl = null;
    button.disabled = true;
    try {
      if (apiKey()) {
        const response = await request(path);
        const disposition = response.headers.get("Content-Disposition") || "";
        const match = /filename="?([^";]+)"?/.exec(disposition);
        link.download = match ? match[1] : `${reference.replace(/[^A-Za-z0-9_.-]/g, "_")}.tar.gz`;
        objectUrl = URL.createObjectURL(await response.blob());
        link.href = objectUrl;
      } else {
        link.href = apiUrl(path);
      }
      document.body.append(link);
      link.click();
      clearError("action");
    } catch (exc) {
      showError(exc, "action");
    } finally {
      button.disabled = false;
      link.remove();
      if (objectUrl) setTimeout(() => URL.revokeObjectURL(objectUrl), 60000);
    }
  }

  // ---------------------------------------------------------------------------------------
  // #/jobs

  function jobsPage(view, gen) {
    const uploadInput = el("input", { type: "file", name: "file", testid: "upload-file", accept: ".jsonl,.json,.txt" });
    const uploadButton = el("button", { type: "submit", testid: "upload-button" }, "Upload");
    const uploadResult = el("div", { class: "upload-result", testid: "upload-result" });
    const uploadForm = el(
      "form",
      { class: "card form", testid: "upload-form" },
      el("h2", {}, "Upload a training file"),
      el("p", { class: "muted" }, "JSONL, one example a line (prompt/completion or chat messages)."),
      el("div", { class: "row" }, uploadInput, uploadButton),
      uploadResult,
    );

    const modelSelect = el("select", { name: "model", testid: "create-model" });
    const fileSelect = el("select", { name: "training_file", testid: "create-file" });
    const methodSelect = el("select", { name: "method", testid: "create-method" });
    const epochsInput = el("input", {
      type: "number", name: "n_epochs", min: 1, max: 1000, step: 1, value: 2, testid: "create-epochs",
    });
    const suffixInput = el("input", {
      type: "text", name: "suffix", placeholder: "optional", pattern: "[A-Za-z0-9_.\\-]*",
      maxlength: 64, testid: "create-suffix",
    });
    const createButton = el("button", { type: "submit", testid: "create-button" }, "Create job");
    const createForm = el(
      "form",
      { class: "card form", testid: "create-form" },
      el("h2", {}, "Create a fine-tuning job"),
      el(
        "div",
        { class: "grid-form" },
        el("label", {}, "Base model", modelSelect),
        el("label", {}, "Training file", fileSelect),
        el("label", {}, "Method", methodSelect),
        el("label", {}, "Epochs", epochsInput),
        el("label", {}, "Suffix", suffixInput),
      ),
      el("div", { class: "row" }, createButton),
    );

    const tbody = el("tbody", { testid: "jobs-body" });
    const table = el(
      "table",
      { class: "jobs", testid: "jobs-table" },
      el(
        "thead",
        {},
        el("tr", {}, ["Job", "Model", "Method", "Status", "Progress", "Adapter", "Created"].map((h) => el("th", {}, h))),
      ),
      tbody,
    );
    const listCard = el(
      "section",
      { class: "card" },
      el("h2", {}, "Jobs ", el("span", { class: "muted small" }, "(refreshed every 2 s)")),
      table,
    );
    view.append(el("h1", {}, "Fine-tuning jobs"), el("div", { class: "two-col" }, uploadForm, createForm), listCard);

    async function loadModels() {
      const models = await api("/v1/models");
      const base = models.data.filter((m) => m.kind !== "adapter");
      const chosen = modelSelect.value;
      put(modelSelect, ...base.map((m) => el("option", { value: m.id }, m.id)));
      if (chosen) modelSelect.value = chosen;
    }

    // The methods come from the service's registry (GET /v1/methods), never from a list here.
    async function loadMethods() {
      const methods = await api("/v1/methods");
      const chosen = methodSelect.value || "post_block";
      put(methodSelect, ...methods.data.map((m) => el("option", { value: m.id, title: m.description }, m.id)));
      if (methods.data.some((m) => m.id === chosen)) methodSelect.value = chosen;
    }

    async function loadFiles(select) {
      const files = await api("/v1/files?purpose=fine-tune&limit=1000");
      const processed = files.data.filter((f) => f.status === "processed");
      processed.sort((a, b) => b.created_at - a.created_at);
      const chosen = select || fileSelect.value;
      if (!processed.length) {
        put(fileSelect, el("option", { value: "", disabled: true, selected: true }, "no processed files: upload one"));
        return;
      }
      put(fileSelect,
        ...processed.map((f) =>
          el("option", { value: f.id }, `${f.filename} · ${f.id} · ${fmtInt(f.n_examples)} examples`),
        ),
      );
      if (chosen && processed.some((f) => f.id === chosen)) fileSelect.value = chosen;
    }

    (async () => {
      try {
        await Promise.all([loadModels(), loadMethods(), loadFiles()]);
      } catch (exc) {
        if (current(gen)) showError(exc, "poll");
      }
    })();

    uploadForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = uploadInput.files && uploadInput.files[0];
      if (!file) {
        showError(new Error("choose a file to upload first"), "action");
        return;
      }
      const form = new FormData();
      form.append("purpose", "fine-tune");
      form.append("file", file, file.name);
      uploadButton.disabled = true;
      put(uploadResult, el("span", { class: "muted" }, `uploading ${file.name}…`));
      try {
        const uploaded = await api("/v1/files", { method: "POST", body: form });
        clearError("action");
        put(uploadResult,
          el(
            "div",
            { class: "facts-inline" },
            el("span", {}, "id ", el("code", { testid: "upload-file-id" }, uploaded.id)),
            el("span", {}, "status ", el("span", { class: `badge badge-file-${uploaded.status}`, testid: "upload-status" }, uploaded.status)),
            el("span", {}, `${fmtInt(uploaded.n_examples)} examples`),
            uploaded.format ? el("span", {}, `format ${uploaded.format}`) : null,
          ),
          uploaded.status_details
            ? el("div", { class: "details", testid: "upload-details" }, uploaded.status_details)
            : null,
        );
        await loadFiles(uploaded.status === "processed" ? uploaded.id : null);
      } catch (exc) {
        put(uploadResult, el("span", { class: "bad", testid: "upload-status" }, "upload failed"));
        showError(exc, "action");
      } finally {
        uploadButton.disabled = false;
      }
    });

    createForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const method = methodSelect.value;
      const epochs = Number.parseInt(epochsInput.value, 10);
      const body = {
        model: modelSelect.value,
        training_file: fileSelect.value,
        method: { type: method, [method]: { hyperparameters: Number.isFinite(epochs) ? { n_epochs: epochs } : {} } },
      };
      if (suffixInput.value.trim()) body.suffix = suffixInput.value.trim();
      createButton.disabled = true;
      try {
        const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body });
        clearError("action");
        location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
      } catch (exc) {
        showError(exc, "action");
      } finally {
        createButton.disabled = false;
      }
    });

    poll(gen, JOBS_REFRESH_MS, async () => {
      const jobs = await api("/v1/fine_tuning/jobs?limit=100");
      if (!current(gen)) return false;
      if (!jobs.data.length) {
        put(tbody, el("tr", { testid: "jobs-empty" }, el("td", { colspan: 7, class: "muted" }, "No jobs yet: upload a file and create one.")));
        return true;
      }
      put(tbody,
        ...jobs.data.map((job) =>
          el(
            "tr",
            { testid: "job-row", "data-job-id": job.id },
            el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, testid: "job-link" }, el("code", {}, job.id))),
            el("td", {}, job.model),
            el("td", {}, (job.method && job.method.type) || "—"),
            el("td", {}, badge(job.status)),
            el("td", { class: "num", testid: "job-percent" }, progressText(job)),
            el(
              "td",
              {},
              job.fine_tuned_model
                ? el("a", { href: `#/adapters/${encodeURIComponent(job.fine_tuned_model)}`, testid: "adapter-link" }, job.fine_tuned_model)
                : "—",
            ),
            el("td", { class: "muted" }, fmtTime(job.created_at)),
          ),
        ),
      );
      return true;
    });
  }

  function progressText(job) {
    const p = job.progress || {};
    return p.percent === null || p.percent === undefined ? "—" : `${fmt(p.percent)} %`;
  }

  // ---------------------------------------------------------------------------------------
  // #/jobs/{id}

  function jobPage(view, gen, jobId) {
    const statusCell = el("span", { testid: "job-status" }, "…");
    const badgeCell = el("span", {});
    const factsBox = el("div", {});
    const bar = el("div", { class: "progress-bar", testid: "job-progress-bar" });
    const barText = el("span", { class: "progress-text", testid: "job-progress" }, "—");
    const cancelButton = el("button", { type: "button", class: "danger", testid: "job-cancel", hidden: true }, "Cancel job");
    const downloadButton = el("button", { type: "button", testid: "job-download", hidden: true }, "Download adapter");
    const adapterLink = el("a", { testid: "job-adapter-link", hidden: true }, "");
    const errorBox = el("div", { class: "job-error", testid: "job-error", hidden: true });
    const lossBox = el("div", { class: "chart", testid: "loss-chart" }, emptyChart("Loss", "waiting for metrics…"));
    const accBox = el("div", { class: "chart", testid: "accuracy-chart" }, emptyChart("Validation accuracy", "waiting for metrics…"));
    const otherBox = el("div", { class: "chart-row" });
    const eventList = el("ol", { class: "events", testid: "event-log" });
    let job = null;
    let metricsKey = "";
    let finalPolls = 0;

    view.append(
      el("p", {}, el("a", { href: "#/jobs" }, "← all jobs")),
      el("h1", {}, "Job ", el("code", { testid: "job-id" }, jobId), " ", badgeCell),
      el(
        "section",
        { class: "card" },
        el("div", { class: "row status-row" }, el("strong", {}, "Status: "), statusCell),
        el("div", { class: "progress" }, el("div", { class: "progress-track" }, bar), barText),
        errorBox,
        el("div", { class: "row actions" }, cancelButton, downloadButton, adapterLink),
        factsBox,
      ),
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Training curves"),
        el("div", { class: "chart-row" }, lossBox, accBox),
        otherBox,
      ),
      el("section", { class: "card" }, el("h2", {}, "Events ", el("span", { class: "muted small" }, "(oldest first)")), eventList),
    );

    cancelButton.addEventListener("click", async () => {
      cancelButton.disabled = true;
      try {
        await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
        clearError("action");
      } catch (exc) {
        showError(exc, "action");
        cancelButton.disabled = false;
      }
    });
    downloadButton.addEventListener("click", () => {
      if (job && job.fine_tuned_model) downloadAdapter(job.fine_tuned_model, downloadButton);
    });

    function renderJob() {
      const final = FINAL.has(job.status);
      statusCell.textContent = job.status;
      statusCell.className = `status-text status-${job.status}`;
      put(badgeCell, badge(job.status));
      const p = job.progress || {};
      const percent = p.percent === null || p.percent === undefined ? 0 : p.percent;
      bar.style.width = `${Math.max(0, Math.min(100, percent))}%`;
      bar.className = `progress-bar progress-${job.status}`;
      barText.textContent =
        `${p.percent === null || p.percent === undefined ? "—" : `${fmt(p.percent)} %`}` +
        (p.total_steps ? ` · step ${p.step || 0} / ${p.total_steps}` : "");
      cancelButton.hidden = final;
      const adapter = job.status === "succeeded" ? job.fine_tuned_model : null;
      downloadButton.hidden = !adapter;
      adapterLink.hidden = !adapter;
      if (adapter) {
        adapterLink.href = `#/adapters/${encodeURIComponent(adapter)}`;
        adapterLink.textContent = `Adapter ${adapter} →`;
      }
      if (job.error) {
        errorBox.hidden = false;
        errorBox.textContent = `${job.error.code}: ${job.error.message}`;
      } else {
        errorBox.hidden = true;
      }
      const hp = job.hyperparameters || {};
      put(factsBox,
        facts([
          ["Base model", job.model, "job-model"],
          ["Method", (job.method && job.method.type) || "—", "job-method"],
          ["Training file", job.training_file],
          ["Validation file", job.validation_file],
          ["Epochs", fmt(hp.n_epochs)],
          ["Batch size", fmt(hp.batch_size)],
          ["Learning rate", fmt(hp.learning_rate)],
          ["Attempts", fmt(p.attempts)],
          ["Trained tokens", fmtInt(job.trained_tokens)],
          ["Created", fmtTime(job.created_at)],
          ["Finished", fmtTime(job.finished_at)],
          ["Fine-tuned model", job.fine_tuned_model],
        ]),
      );
    }

    function renderEvents(events) {
      const ordered = events.slice().reverse();
      put(eventList,
        ...ordered.map((e) =>
          el(
            "li",
            { class: `event level-${e.level} type-${e.type}`, testid: "event" },
            el("span", { class: "event-time" }, fmtClock(e.created_at)),
            el("span", { class: `level level-${e.level}` }, e.level),
            el("span", { class: "event-message" }, e.message),
          ),
        ),
      );
      if (!ordered.length) put(eventList, el("li", { class: "muted" }, "no events yet"));
    }

    function renderMetrics(rows) {
      const key = `${rows.length}:${rows.length ? rows[rows.length - 1].step : ""}`;
      if (key === metricsKey) return;
      metricsKey = key;
      const by = {};
      for (const r of rows) {
        if (typeof r.value !== "number" || !Number.isFinite(r.value)) continue;
        (by[r.name] = by[r.name] || []).push([r.step, r.value]);
      }
      for (const series of Object.values(by)) series.sort((a, b) => a[0] - b[0]);
      const lossSeries = ["train_loss", "valid_loss"]
        .filter((n) => by[n] && by[n].length)
        .map((n) => ({ name: n, points: by[n], color: COLORS[n] }));
      put(lossBox,
        lossSeries.length
          ? lineChart({ title: "Loss", series: lossSeries, xLabel: "step", yLabel: "loss", testid: "loss-svg" })
          : emptyChart("Loss", FINAL.has(job && job.status) ? "no loss recorded for this job" : "waiting for the first training step…", "loss-note"),
      );
      if (by.valid_accuracy && by.valid_accuracy.length) {
        const inUnit = by.valid_accuracy.every(([, v]) => v >= 0 && v <= 1);
        put(accBox,
          lineChart({
            title: "Validation accuracy",
            series: [{ name: "valid_accuracy", points: by.valid_accuracy, color: COLORS.valid_accuracy }],
            xLabel: "step",
            yLabel: "accuracy",
            yDomain: inUnit ? [0, 1] : null,
            testid: "accuracy-svg",
          }),
        );
      } else {
        put(accBox,
          emptyChart("Validation accuracy", "no accuracy metric for this job", "accuracy-note"),
        );
      }
      const extra = ["learning_rate", "tokens_per_second"].filter((n) => by[n] && by[n].length);
      put(otherBox,
        ...extra.map((n) =>
          el(
            "div",
            { class: "chart small-chart", testid: `${n}-chart` },
            lineChart({
              title: n.replace(/_/g, " "),
              series: [{ name: n, points: by[n], color: "#7c3aed" }],
              xLabel: "step",
              yLabel: n === "learning_rate" ? "lr" : "tokens/s",
              height: 200,
            }),
          ),
        ),
      );
    }

    async function loadMetrics() {
      try {
        const metrics = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/metrics`);
        if (current(gen)) renderMetrics(metrics.data || []);
      } catch (exc) {
        if (!current(gen)) return;
        if (exc instanceof ApiError && exc.status === 404 && job) {
          metricsKey = "";
          put(lossBox, emptyChart("Loss", `metrics are not available from this API (${exc.message})`, "loss-note"));
          put(accBox, emptyChart("Validation accuracy", "no accuracy metric for this job", "accuracy-note"));
          return;
        }
        throw exc;
      }
    }

    poll(gen, JOB_REFRESH_MS, async () => {
      const path = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
      const [fetched, events] = await Promise.all([api(path), api(`${path}/events?limit=1000`)]);
      if (!current(gen)) return false;
      job = fetched;
      renderJob();
      renderEvents(events.data || []);
      await loadMetrics();
      if (FINAL.has(job.status)) {
        finalPolls += 1; // one more round after the final status, for the last events
        return finalPolls < 2;
      }
      return true;
    });
  }

  // ---------------------------------------------------------------------------------------
  // #/adapters/{ref}

  function adapterPage(view, gen, reference) {
    const title = el("code", { testid: "adapter-title" }, reference);
    const factsBox = el("div", {}, note("loading…"));
    const downloadButton = el("button", { type: "button", testid: "adapter-download" }, "Download adapter (.tar.gz)");
    const normBox = el("div", { class: "chart", testid: "layer-norm-chart" }, note("loading…"));
    const shiftBox = el("div", { class: "chart", testid: "layer-shift-chart" }, note("loading…"));
    const layerTable = el("div", {});
    const siteLine = el("p", { class: "muted", testid: "layers-site" });
    view.append(
      el("p", {}, el("a", { href: "#/jobs" }, "← all jobs")),
      el("h1", {}, "Adapter ", title),
      el("section", { class: "card" }, factsBox, el("div", { class: "row actions" }, downloadButton)),
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Per-layer steering"),
        siteLine,
        el("div", { class: "chart-row" }, normBox, shiftBox),
        layerTable,
      ),
    );
    downloadButton.addEventListener("click", () => downloadAdapter(reference, downloadButton));

    (async () => {
      const ref = encodeURIComponent(reference);
      try {
        const adapter = await api(`/v1/adapters/${ref}`);
        if (!current(gen)) return;
        title.textContent = adapter.reference;
        const method = adapter.method || {};
        const methodText = [method.type, method.site && method.site.name, method.adapter && method.adapter.kind]
          .filter(Boolean)
          .join(" · ");
        put(factsBox,
          facts([
            ["Reference", adapter.reference, "adapter-reference"],
            ["Id", adapter.id, "adapter-id"],
            ["Base model", adapter.base_model, "adapter-base-model"],
            ["Method", methodText || "—", "adapter-method"],
            ["Trainable parameters", fmtInt(adapter.trainable_parameters), "adapter-params"],
            ["Size", fmtBytes(adapter.bytes), "adapter-bytes"],
            ["sha256", el("code", { class: "hash" }, adapter.sha256), "adapter-sha256"],
            [
              "Job",
              adapter.job_id ? el("a", { href: `#/jobs/${encodeURIComponent(adapter.job_id)}` }, adapter.job_id) : null,
              "adapter-job",
            ],
            ["Created", fmtTime(adapter.created_at)],
            ["Files", Object.keys(adapter.files || {}).sort().join(", "), "adapter-files"],
          ]),
        );
      } catch (exc) {
        if (current(gen)) {
          put(factsBox, note("could not load the adapter"));
          showError(exc, "poll");
        }
        return;
      }
      try {
        const layers = await api(`/v1/adapters/${ref}/layers`);
        if (!current(gen)) return;
        renderLayers(layers);
      } catch (exc) {
        if (!current(gen)) return;
        const text = `per-layer data not available (${exc.message})`;
        put(normBox, note(text, "layers-note"));
        put(shiftBox);
        if (!(exc instanceof ApiError && exc.status === 404)) showError(exc, "poll");
      }
    })();

    function renderLayers(info) {
      const rows = (info.layers || []).slice().sort((a, b) => a.layer - b.layer);
      siteLine.textContent = `site ${info.site || "—"} · kind ${info.kind || "—"} · ${rows.length} steered layer${rows.length === 1 ? "" : "s"}`;
      if (!rows.length) {
        put(normBox, note("this adapter steers no layer", "layers-note"));
        put(shiftBox);
        return;
      }
      put(normBox,
        barChart({
          title: "Parameter norm per layer",
          items: rows.map((r) => ({ label: String(r.layer), value: r.parameter_norm })),
          yLabel: "‖θ‖",
          color: "#2563eb",
          testid: "layer-norm-svg",
        }),
      );
      const shifts = rows.map((r) => ({ label: String(r.layer), value: r.relative_shift }));
      put(shiftBox,
        barChart({
          title: "Relative steering shift per layer",
          items: shifts,
          yLabel: "‖shift‖ / ‖residual‖",
          color: "#ea580c",
          testid: "layer-shift-svg",
        }),
        shifts.every((s) => s.value === null || s.value === undefined)
          ? note("relative shift not recorded for this adapter", "shift-note")
          : null,
      );
      put(layerTable,
        el(
          "table",
          { class: "layers", testid: "layers-table" },
          el("thead", {}, el("tr", {}, ["Layer", "Parameter norm", "Shift norm", "Residual norm", "Relative shift"].map((h) => el("th", {}, h)))),
          el(
            "tbody",
            {},
            rows.map((r) =>
              el(
                "tr",
                { testid: "layer-row" },
                el("td", { class: "num" }, r.layer),
                el("td", { class: "num" }, fmt(r.parameter_norm)),
                el("td", { class: "num" }, recorded(r.shift_norm)),
                el("td", { class: "num" }, recorded(r.residual_norm)),
                el("td", { class: "num" }, recorded(r.relative_shift)),
              ),
            ),
          ),
        ),
      );
    }
  }

  function recorded(value) {
    return value === null || value === undefined ? "not recorded" : fmt(value);
  }

  // ---------------------------------------------------------------------------------------
  // Charts (inline SVG)

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const power = 10 ** Math.floor(Math.log10(raw));
    const f = raw / power;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * power;
  }

  /** Ticks covering [lo, hi], the domain widened to the outer ticks, and one label format
   * for all of them (same decimals, or all in exponent form for very small or large steps). */
  function ticks(lo, hi, count, integer) {
    let step = niceStep(hi - lo, count);
    if (integer) step = Math.max(1, Math.round(step));
    const start = Math.floor(lo / step + 1e-9) * step;
    const end = Math.ceil(hi / step - 1e-9) * step;
    const values = [];
    for (let v = start; v <= end + step / 2 && values.length < 50; v += step) {
      values.push(Number(v.toPrecision(12)));
    }
    const maxAbs = Math.max(Math.abs(start), Math.abs(end));
    let label;
    if (step < 1e-3 || maxAbs >= 1e5) {
      label = (v) => (v === 0 ? "0" : v.toExponential(1));
    } else {
      const d = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
      const decimals = Number(step.toFixed(d)) === Number(step.toPrecision(12)) ? d : d + 1;
      label = (v) => v.toFixed(decimals);
    }
    return { values, lo: start, hi: end, label };
  }

  function chartFrame(width, height, title, testid) {
    return svgEl(
      "svg",
      {
        viewBox: `0 0 ${width} ${height}`,
        width,
        height,
        class: "svg-chart",
        role: "img",
        "aria-label": title,
        testid,
        preserveAspectRatio: "xMinYMin meet",
      },
      svgEl("text", { x: 8, y: 16, class: "chart-title-svg" }, title),
    );
  }

  /** lineChart({title, series: [{name, points: [[x, y], ...], color}], xLabel, yLabel}) */
  function lineChart({ title, series, xLabel, yLabel, width = 560, height = 280, yDomain = null, testid }) {
    const m = { l: 62, r: 18, t: 30, b: 44 };
    const pw = width - m.l - m.r;
    const ph = height - m.t - m.b;
    const all = series.flatMap((s) => s.points);
    let x0 = Math.min(...all.map((p) => p[0]));
    let x1 = Math.max(...all.map((p) => p[0]));
    if (x0 === x1) {
      x0 = Math.max(0, x0 - 1);
      x1 += 1;
    }
    let y0 = Math.min(...all.map((p) => p[1]));
    let y1 = Math.max(...all.map((p) => p[1]));
    if (yDomain) [y0, y1] = yDomain;
    if (y0 === y1) {
      const pad = Math.abs(y0) * 0.1 || 1;
      y0 -= pad;
      y1 += pad;
    }
    const xt = ticks(x0, x1, 6, true);
    const yt = ticks(y0, y1, 5, false);
    [x0, x1] = [xt.lo, xt.hi];
    [y0, y1] = [yt.lo, yt.hi];
    const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * pw;
    const sy = (y) => m.t + ph - ((y - y0) / (y1 - y0)) * ph;

    const svg = chartFrame(width, height, title, testid);
    const grid = svgEl("g", { class: "grid" });
    const labels = svgEl("g", { class: "tick-labels" });
    for (const v of yt.values) {
      grid.append(svgEl("line", { x1: m.l, x2: m.l + pw, y1: sy(v), y2: sy(v) }));
      labels.append(svgEl("text", { x: m.l - 6, y: sy(v) + 4, "text-anchor": "end" }, yt.label(v)));
    }
    for (const v of xt.values) {
      grid.append(svgEl("line", { x1: sx(v), x2: sx(v), y1: m.t, y2: m.t + ph, class: "vgrid" }));
      labels.append(svgEl("text", { x: sx(v), y: m.t + ph + 16, "text-anchor": "middle" }, xt.label(v)));
    }
    svg.append(
      grid,
      labels,
      svgEl("line", { x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph, class: "axis", testid: "x-axis" }),
      svgEl("line", { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph, class: "axis", testid: "y-axis" }),
      svgEl("text", { x: m.l + pw / 2, y: height - 6, "text-anchor": "middle", class: "axis-label" }, xLabel),
      svgEl(
        "text",
        { x: 14, y: m.t + ph / 2, "text-anchor": "middle", class: "axis-label", transform: `rotate(-90 14 ${m.t + ph / 2})` },
        yLabel,
      ),
    );
    const legend = svgEl("g", { class: "legend" });
    series.forEach((s, i) => {
      const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      svg.append(
        svgEl("polyline", {
          points,
          fill: "none",
          stroke: s.color,
          "stroke-width": 2,
          "stroke-linejoin": "round",
          class: "series",
          "data-series": s.name,
          testid: `series-${s.name}`,
        }),
      );
      if (s.points.length <= 80) {
        const dots = svgEl("g", { fill: s.color });
        for (const [x, y] of s.points) {
          dots.append(svgEl("circle", { cx: sx(x), cy: sy(y), r: 2.6 }, svgEl("title", {}, `${s.name} step ${x}: ${fmt(y)}`)));
        }
        svg.append(dots);
      }
      const last = s.points[s.points.length - 1];
      const lx = m.l + pw - 150;
      const ly = m.t + 4 + i * 16;
      legend.append(
        svgEl("rect", { x: lx, y: ly, width: 12, height: 3, fill: s.color }),
        svgEl("text", { x: lx + 16, y: ly + 5 }, `${s.name} ${last ? fmt(last[1]) : ""}`),
      );
    });
    svg.append(legend);
    return svg;
  }

  /** barChart({title, items: [{label, value | null}], yLabel, color}) */
  function barChart({ title, items, yLabel, color, width = 560, height = 280, testid }) {
    const m = { l: 62, r: 18, t: 30, b: 44 };
    const pw = width - m.l - m.r;
    const ph = height - m.t - m.b;
    const values = items.map((d) => d.value).filter((v) => typeof v === "number" && Number.isFinite(v));
    const top = values.length ? Math.max(...values, 0) : 1;
    const yt = ticks(0, top > 0 ? top : 1, 5, false);
    const y1 = yt.hi;
    const sy = (y) => m.t + ph - (y / y1) * ph;
    const band = pw / items.length;
    const barW = Math.max(2, band * 0.68);

    const svg = chartFrame(width, height, title, testid);
    const grid = svgEl("g", { class: "grid" });
    const labels = svgEl("g", { class: "tick-labels" });
    for (const v of yt.values) {
      grid.append(svgEl("line", { x1: m.l, x2: m.l + pw, y1: sy(v), y2: sy(v) }));
      labels.append(svgEl("text", { x: m.l - 6, y: sy(v) + 4, "text-anchor": "end" }, yt.label(v)));
    }
    svg.append(grid, labels);
    const bars = svgEl("g", { class: "bars" });
    const every = Math.ceil(items.length / 24);
    items.forEach((d, i) => {
      const cx = m.l + band * i + band / 2;
      const missing = !(typeof d.value === "number" && Number.isFinite(d.value));
      if (missing) {
        bars.append(
          svgEl(
            "rect",
            { x: cx - barW / 2, y: m.t, width: barW, height: ph, class: "bar-missing", testid: "bar-missing", "data-layer": d.label },
            svgEl("title", {}, `layer ${d.label}: not recorded`),
          ),
          svgEl(
            "text",
            { x: cx, y: m.t + ph / 2, "text-anchor": "middle", class: "missing-label", transform: `rotate(-90 ${cx} ${m.t + ph / 2})` },
            "not recorded",
          ),
        );
      } else {
        const y = sy(Math.max(0, d.value));
        bars.append(
          svgEl(
            "rect",
            { x: cx - barW / 2, y, width: barW, height: Math.max(0.5, m.t + ph - y), fill: color, class: "bar", testid: "bar", "data-layer": d.label },
            svgEl("title", {}, `layer ${d.label}: ${fmt(d.value)}`),
          ),
        );
        if (items.length <= 16) {
          bars.append(svgEl("text", { x: cx, y: y - 4, "text-anchor": "middle", class: "bar-value" }, fmt(d.value)));
        }
      }
      if (i % every === 0) {
        labels.append(svgEl("text", { x: cx, y: m.t + ph + 16, "text-anchor": "middle" }, d.label));
      }
    });
    svg.append(
      bars,
      svgEl("line", { x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph, class: "axis", testid: "x-axis" }),
      svgEl("line", { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph, class: "axis", testid: "y-axis" }),
      svgEl("text", { x: m.l + pw / 2, y: height - 6, "text-anchor": "middle", class: "axis-label" }, "layer"),
      svgEl(
        "text",
        { x: 14, y: m.t + ph / 2, "text-anchor": "middle", class: "axis-label", transform: `rotate(-90 14 ${m.t + ph / 2})` },
        yLabel,
      ),
    );
    return svg;
  }

  // ---------------------------------------------------------------------------------------
  // Start

  function initKeyForm() {
    const input = document.getElementById("api-key");
    const state = document.getElementById("key-state");
    const show = () => {
      state.textContent = apiKey() ? "key saved" : "no key";
    };
    input.value = apiKey();
    show();
    document.getElementById("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      try {
        if (input.value.trim()) localStorage.setItem(KEY_STORAGE, input.value.trim());
        else localStorage.removeItem(KEY_STORAGE);
      } catch (_e) {
        /* storage disabled: nothing to keep */
      }
      show();
      clearError();
      route();
    });
    document.getElementById("error-close").addEventListener("click", () => clearError());
  }

  window.addEventListener("hashchange", route);
  initKeyForm();
  if (!location.hash) history.replaceState(null, "", "#/jobs");
  route();
})();
