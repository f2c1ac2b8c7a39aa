/* steering-service dashboard: a single page over the service's own HTTP API.
 *
 * No build step and no dependencies: plain DOM, fetch, and charts drawn as inline SVG. Scripts:
 * common.js (DOM, formats, API access), charts.js, job_form.js (the create-job form),
 * compare.js (#/compare) and this one: the router and the other pages.
 * Routes (location.hash): #/jobs, #/jobs/{id}, #/compare/{id},{id},...,
 * #/adapters/{id or name@version}.
 * Every request goes to the API relative to this page (…/dashboard -> …/v1/...) and carries
 * "Authorization: Bearer <key>" when a key is saved in the header field (localStorage).
 */
"use strict";

(function (D) {
  const { el, put, fmt, fmtInt, fmtTime, fmtClock, badge, facts, note, emptyChart, api, ApiError, showError, clearError, FINAL, DASH } = D;
  const JOBS_REFRESH_MS = 2000;
  const JOB_REFRESH_MS = 1500;
  const COLORS = {
    train_loss: "#2563eb",
    valid_loss: "#ea580c",
    train_mean_token_accuracy: "#0d9488",
    valid_mean_token_accuracy: "#16a34a",
    valid_accuracy: "#65a30d",
  };
  // what the engine records (token accuracies), and a task accuracy where a job has one
  const ACCURACY_METRICS = ["train_mean_token_accuracy", "valid_mean_token_accuracy", "valid_accuracy"];
  const CHECKPOINT_PAGES = 20; // at most 20 pages of 100 checkpoints

  // ---------------------------------------------------------------------------------------
  // Router and polling: one view at a time; a new route stops the old view's timers.

  let generation = 0;
  let timer = null;

  /** How an adapter was trained: the job's method, and the adapter a distilled one learned
   * from (a link to its page). */
  function trainedBy(info) {
    if (!info || !info.method) return DASH;
    if (!info.source) return info.method;
    const link = el("a", { href: `#/adapters/${encodeURIComponent(info.source)}` }, info.source);
    return el("span", {}, `${info.method} from `, link);
  }

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
    D.forgetAdapters(); // an adapter deleted meanwhile shows as deleted on the next page
    const hash = location.hash || "#/jobs";
    const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    const view = document.getElementById("view");
    put(view);
    const gen = generation;
    if (parts[0] === "jobs" && parts.length > 1) {
      jobPage(view, gen, parts.slice(1).join("/"));
    } else if (parts[0] === "compare" && parts.length > 1) {
      const ids = [...new Set(parts.slice(1).join("/").split(",").filter(Boolean))];
      D.comparePage(view, { gen, current, poll }, ids);
    } else if (parts[0] === "adapters" && parts.length > 1) {
      adapterPage(view, gen, parts.slice(1).join("/"));
    } else {
      jobsPage(view, gen);
    }
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.getAttribute("href") === `#/${parts[0] || "jobs"}`);
    }
  }

  function downloadAdapter(reference, button) {
    D.download(`v1/adapters/${encodeURIComponent(reference)}/content`, reference, button);
  }

  // ---------------------------------------------------------------------------------------
  // #/jobs

  // The jobs ticked for comparison; kept while the page is open, across visits to other pages.
  const selected = new Set();

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
    const createForm = D.jobForm({
      onCreated(job) {
        location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
      },
    });

    const tbody = el("tbody", { testid: "jobs-body" });
    const compareButton = el("button", { type: "button", testid: "compare-button", disabled: true }, "Compare selected");
    const clearButton = el("button", { type: "button", class: "secondary", testid: "compare-clear", disabled: true }, "Clear selection");
    const selectionText = el("span", { class: "muted", testid: "compare-count" });
    const table = el(
      "table",
      { class: "jobs", testid: "jobs-table" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { class: "pick", title: "select jobs to compare" }, "✓"),
          ["Job", "Model", "Method", "Status", "Progress", "Adapter", "Created"].map((h) => el("th", {}, h)),
        ),
      ),
      tbody,
    );
    const listCard = el(
      "section",
      { class: "card" },
      el("h2", {}, "Jobs ", el("span", { class: "muted small" }, "(refreshed every 2 s)")),
      el("div", { class: "row compare-bar" }, compareButton, clearButton, selectionText),
      table,
    );
    view.append(el("h1", {}, "Fine-tuning jobs"), el("div", { class: "forms" }, uploadForm, createForm.node), listCard);

    let jobs = [];

    function showSelection() {
      const n = selected.size;
      selectionText.textContent = n ? `${n} selected` : "tick two or more jobs to compare their curves and settings";
      compareButton.disabled = n < 2;
      clearButton.disabled = n === 0;
    }

    compareButton.addEventListener("click", () => {
      location.hash = `#/compare/${[...selected].map(encodeURIComponent).join(",")}`;
    });
    clearButton.addEventListener("click", () => {
      selected.clear();
      renderRows();
    });

    function renderRows() {
      showSelection();
      if (!jobs.length) {
        put(tbody, el("tr", { testid: "jobs-empty" }, el("td", { colspan: 8, class: "muted" }, "No jobs yet: upload a file and create one.")));
        return;
      }
      put(tbody, ...jobs.map(jobRow));
    }

    function jobRow(job) {
      const pick = el("input", { type: "checkbox", testid: "job-select", "aria-label": `select ${job.id}`, checked: selected.has(job.id) });
      pick.addEventListener("change", () => {
        if (pick.checked) selected.add(job.id);
        else selected.delete(job.id);
        pick.closest("tr").classList.toggle("picked", pick.checked);
        showSelection();
      });
      const adapterTd = el("td", { testid: "job-adapter" }, D.adapterCell(job.fine_tuned_model, null));
      if (job.fine_tuned_model) {
        D.lookupAdapter(job.fine_tuned_model).then((found) => {
          if (current(gen)) put(adapterTd, D.adapterCell(job.fine_tuned_model, found));
        });
      }
      return el(
        "tr",
        { testid: "job-row", "data-job-id": job.id, class: selected.has(job.id) ? "picked" : null },
        el("td", { class: "pick" }, pick),
        el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, testid: "job-link" }, el("code", {}, job.id))),
        el("td", {}, job.model),
        el("td", {}, (job.method && job.method.type) || DASH),
        el("td", {}, badge(job.status)),
        el("td", { class: "num", testid: "job-percent" }, progressText(job)),
        adapterTd,
        el("td", { class: "muted" }, fmtTime(job.created_at)),
      );
    }

    (async () => {
      try {
        await createForm.load();
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
        await createForm.loadFiles(uploaded.status === "processed" ? uploaded.id : null);
      } catch (exc) {
        put(uploadResult, el("span", { class: "bad", testid: "upload-status" }, "upload failed"));
        showError(exc, "action");
      } finally {
        uploadButton.disabled = false;
      }
    });

    poll(gen, JOBS_REFRESH_MS, async () => {
      const answer = await api("/v1/fine_tuning/jobs?limit=100");
      if (!current(gen)) return false;
      jobs = answer.data;
      renderRows();
      return true;
    });
  }

  function progressText(job) {
    const p = job.progress || {};
    return p.percent === null || p.percent === undefined ? DASH : `${fmt(p.percent)} %`;
  }

  // ---------------------------------------------------------------------------------------
  // #/jobs/{id}

  function jobPage(view, gen, jobId) {
    const statusCell = el("span", { testid: "job-status" }, "…");
    const badgeCell = el("span", {});
    const factsBox = el("div", {});
    const bar = el("div", { class: "progress-bar", testid: "job-progress-bar" });
    const barText = el("span", { class: "progress-text", testid: "job-progress" }, DASH);
    const cancelButton = el("button", { type: "button", class: "danger", testid: "job-cancel", hidden: true }, "Cancel job");
    const pauseButton = el("button", { type: "button", testid: "job-pause", hidden: true }, "Pause");
    const resumeButton = el("button", { type: "button", testid: "job-resume", hidden: true }, "Resume");
    const downloadButton = el("button", { type: "button", testid: "job-download", hidden: true }, "Download adapter");
    const adapterLink = el("a", { testid: "job-adapter-link", hidden: true }, "");
    const errorBox = el("div", { class: "job-error", testid: "job-error", hidden: true });
    const lossBox = el("div", { class: "chart", testid: "loss-chart" }, emptyChart("Loss", "waiting for metrics…"));
    const accBox = el("div", { class: "chart", testid: "accuracy-chart" }, emptyChart("Validation accuracy", "waiting for metrics…"));
    const otherBox = el("div", { class: "chart-row" });
    const checkpointBox = el("div", { class: "table-scroll", testid: "checkpoints" }, note("loading…"));
    const eventList = el("ol", { class: "events", testid: "event-log" });
    let job = null;
    let adapterFound = null; // the look-up of job.fine_tuned_model, once it has answered
    let metricsKey = "";
    let checkpointsKey = "";
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
        el("div", { class: "row actions" }, pauseButton, resumeButton, cancelButton, downloadButton, adapterLink),
        factsBox,
      ),
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Training curves"),
        el("div", { class: "chart-row" }, lossBox, accBox),
        otherBox,
      ),
      el("section", { class: "card" }, el("h2", {}, "Checkpoints"), checkpointBox),
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
    for (const [button, action] of [[pauseButton, "pause"], [resumeButton, "resume"]]) {
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          job = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/${action}`, { method: "POST" });
          clearError("action");
          renderJob();
        } catch (exc) {
          showError(exc, "action");
        }
        button.disabled = false;
      });
    }
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
        `${p.percent === null || p.percent === undefined ? DASH : `${fmt(p.percent)} %`}` +
        (p.total_steps ? ` · step ${p.step || 0} / ${p.total_steps}` : "");
      cancelButton.hidden = final;
      pauseButton.hidden = !["queued", "running"].includes(job.status);
      resumeButton.hidden = job.status !== "paused";
      // the adapter's buttons once it is known to exist (a deleted one has none)
      const adapter = job.status === "succeeded" && adapterFound && adapterFound.adapter ? adapterFound.adapter : null;
      downloadButton.hidden = !adapter;
      adapterLink.hidden = !adapter;
      if (adapter) {
        adapterLink.href = `#/adapters/${encodeURIComponent(job.fine_tuned_model)}`;
        adapterLink.textContent = `Adapter ${adapter.reference} →`;
      }
      if (job.error) {
        errorBox.hidden = false;
        errorBox.textContent = `${job.error.code}: ${job.error.message}`;
      } else {
        errorBox.hidden = true;
      }
      const hp = job.hyperparameters || {};
      const compute = job.compute || {};
      put(factsBox,
        facts([
          ["Base model", job.model, "job-model"],
          ["Method", (job.method && job.method.type) || DASH, "job-method"],
          ["Training file", job.training_file],
          ["Validation file", job.validation_file, "job-validation-file"],
          ["Epochs", fmt(hp.n_epochs)],
          ["Batch size", fmt(hp.batch_size)],
          ["Learning rate", fmt(hp.learning_rate)],
          ["Compute", job.compute ? `${compute.gpus ? `${compute.gpus} GPU` : "CPU"} · ${fmt(compute.processes)} process${compute.processes === 1 ? "" : "es"}${compute.deepspeed ? " · DeepSpeed" : ""}` : null, "job-compute"],
          ["Attempts", fmt(p.attempts)],
          ["Trained tokens", fmtInt(job.trained_tokens)],
          ["Created", fmtTime(job.created_at)],
          ["Finished", fmtTime(job.finished_at)],
          ["Fine-tuned model", job.fine_tuned_model ? D.adapterCell(job.fine_tuned_model, adapterFound) : null, "job-fine-tuned-model"],
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
          ? D.lineChart({ title: "Loss", series: lossSeries, xLabel: "step", yLabel: "loss", testid: "loss-svg" })
          : emptyChart("Loss", FINAL.has(job && job.status) ? "no loss recorded for this job" : "waiting for the first training step…", "loss-note"),
      );
      const accuracySeries = ACCURACY_METRICS
        .filter((n) => by[n] && by[n].length)
        .map((n) => ({ name: n, points: by[n], color: COLORS[n] }));
      if (accuracySeries.length) {
        const inUnit = accuracySeries.every((s) => s.points.every(([, v]) => v >= 0 && v <= 1));
        put(accBox,
          D.lineChart({
            title: "Mean token accuracy",
            series: accuracySeries,
            xLabel: "step",
            yLabel: "accuracy",
            yDomain: inUnit ? [0, 1] : null,
            testid: "accuracy-svg",
          }),
        );
      } else {
        put(accBox,
          emptyChart("Mean token accuracy", "no accuracy metric for this job", "accuracy-note"),
        );
      }
      const extra = ["learning_rate", "tokens_per_second"].filter((n) => by[n] && by[n].length);
      put(otherBox,
        ...extra.map((n) =>
          el(
            "div",
            { class: "chart small-chart", testid: `${n}-chart` },
            D.lineChart({
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

    // Checkpoints: OpenAI's shape; every metric a checkpoint carries gets a column (step,
    // train_loss and valid_loss first), an unmeasured one reads as a dash.
    async function loadCheckpoints() {
      const path = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/checkpoints`;
      const all = [];
      let after = null;
      for (let page = 0; page < CHECKPOINT_PAGES; page += 1) {
        const answer = await api(`${path}?limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
        all.push(...(answer.data || []));
        if (!answer.has_more || !answer.last_id) break;
        after = answer.last_id;
      }
      if (!current(gen)) return;
      const key = JSON.stringify(all);
      if (key === checkpointsKey) return;
      checkpointsKey = key;
      renderCheckpoints(all);
    }

    function renderCheckpoints(checkpoints) {
      if (!checkpoints.length) {
        put(checkpointBox, note(FINAL.has(job && job.status) ? "this job saved no checkpoints" : "no checkpoints yet", "checkpoints-empty"));
        return;
      }
      const rows = checkpoints.slice().sort((a, b) => a.step_number - b.step_number);
      const names = ["train_loss", "valid_loss"];
      for (const c of rows) {
        for (const [name, value] of Object.entries(c.metrics || {})) {
          if (name !== "step" && !names.includes(name) && value !== null && value !== undefined) names.push(name);
        }
      }
      put(checkpointBox,
        el(
          "table",
          { class: "checkpoints", testid: "checkpoints-table" },
          el(
            "thead",
            {},
            el("tr", {}, ["Step", "Checkpoint", ...names.map((n) => n.replace(/_/g, " ")), "Created", ""].map((h) => el("th", {}, h))),
          ),
          el(
            "tbody",
            {},
            rows.map((c) => {
              const button = el("button", { type: "button", class: "secondary small-button", testid: "checkpoint-download" }, "Download");
              button.addEventListener("click", () =>
                D.download(
                  `v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/checkpoints/${encodeURIComponent(c.id)}/content`,
                  c.fine_tuned_model_checkpoint,
                  button,
                ),
              );
              const metrics = c.metrics || {};
              return el(
                "tr",
                { testid: "checkpoint-row", "data-step": c.step_number },
                el("td", { class: "num", testid: "checkpoint-step" }, c.step_number),
                el("td", {}, el("code", { testid: "checkpoint-model" }, c.fine_tuned_model_checkpoint)),
                names.map((n) => el("td", { class: "num", "data-metric": n }, fmt(metrics[n]))),
                el("td", { class: "muted" }, fmtTime(c.created_at)),
                el("td", {}, button),
              );
            }),
          ),
        ),
      );
    }

    async function lookUpAdapter() {
      if (!job.fine_tuned_model || adapterFound) return;
      const found = await D.lookupAdapter(job.fine_tuned_model);
      if (found.error) throw found.error;
      adapterFound = found;
    }

    poll(gen, JOB_REFRESH_MS, async () => {
      const path = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
      const [fetched, events] = await Promise.all([api(path), api(`${path}/events?limit=1000`)]);
      if (!current(gen)) return false;
      job = fetched;
      await lookUpAdapter();
      if (!current(gen)) return false;
      renderJob();
      renderEvents(events.data || []);
      await Promise.all([loadMetrics(), loadCheckpoints()]);
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
    const scoreBox = el("div", { class: "chart", testid: "layer-score-chart", hidden: true });
    const layerTable = el("div", {});
    const siteLine = el("p", { class: "muted", testid: "layers-site" });
    const strengthSection = el("section", { class: "card", testid: "strength-report", hidden: true });
    view.append(
      el("p", {}, el("a", { href: "#/jobs" }, "← all jobs")),
      el("h1", {}, "Adapter ", title),
      el("section", { class: "card" }, factsBox, el("div", { class: "row actions" }, downloadButton)),
      strengthSection,
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Per-layer steering"),
        siteLine,
        el("div", { class: "chart-row" }, normBox, shiftBox),
        el("div", { class: "chart-row" }, scoreBox),
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
            ["Method", methodText || DASH, "adapter-method"],
            ["Trained by", trainedBy(adapter.trained_by), "adapter-trained-by"],
            ["Trainable parameters", fmtInt(adapter.trainable_parameters), "adapter-params"],
            ["Size", D.fmtBytes(adapter.bytes), "adapter-bytes"],
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
        renderStrength(adapter.strength_report);
      } catch (exc) {
        if (current(gen)) {
          const gone = exc instanceof ApiError && exc.status === 404;
          put(factsBox, note(gone ? "this adapter does not exist (it may have been deleted)" : "could not load the adapter", "adapter-missing"));
          downloadButton.hidden = gone;
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

    // The strength report: score and off-task KL at each strength, the recommended one marked.
    function renderStrength(report) {
      strengthSection.hidden = !report || !(report.points || []).length;
      if (strengthSection.hidden) return;
      const points = report.points;
      const recommended = report.recommended_strength;
      put(strengthSection,
        el("h2", {}, "Strength report"),
        el("p", { class: "muted", testid: "strength-summary" },
          `Recommended strength ${recommended === null ? DASH : fmt(recommended)} ` +
          `(the smallest reaching 99% of the best score) · ${report.items} validation items ` +
          `scored by ${report.task} · KL on ${report.neutral_prompts} neutral prompts against ` +
          `strength 0 · ${fmt(report.seconds)} s of a ${fmt(report.budget_seconds)} s budget` +
          (report.complete ? "" : " (budget spent: not every strength measured)")),
        el("div", { class: "chart-row" },
          el("div", { class: "chart" }, D.lineChart({
            title: "Score by strength",
            series: [{ name: "score", points: points.map((p) => [p.strength, p.score]), color: "#16a34a" }],
            xLabel: "strength", yLabel: "score", yDomain: [0, 1], testid: "strength-score-svg",
          })),
          el("div", { class: "chart" }, D.lineChart({
            title: "Off-task KL by strength (nats)",
            series: [{ name: "kl", points: points.map((p) => [p.strength, p.kl]), color: "#ea580c" }],
            xLabel: "strength", yLabel: "KL", testid: "strength-kl-svg",
          })),
        ),
        el("table", { class: "layers", testid: "strength-table" },
          el("thead", {}, el("tr", {}, ["Strength", "Score", "KL"].map((h) => el("th", {}, h)))),
          el("tbody", {}, ...points.map((p) => {
            const row = el("tr", { testid: "strength-row" },
              el("td", {}, fmt(p.strength)), el("td", {}, fmt(p.score)), el("td", {}, fmt(p.kl)));
            if (p.strength === recommended) row.classList.add("chosen");
            return row;
          })),
        ),
      );
    }

    function renderLayers(info) {
      renderSelection(info.selection);
      const rows = (info.layers || []).slice().sort((a, b) => a.layer - b.layer);
      siteLine.textContent = `site ${info.site || DASH} · kind ${info.kind || DASH} · ${rows.length} steered layer${rows.length === 1 ? "" : "s"}`;
      if (!rows.length) {
        put(normBox, note("this adapter steers no layer", "layers-note"));
        put(shiftBox);
        return;
      }
      put(normBox,
        D.barChart({
          title: "Parameter norm per layer",
          items: rows.map((r) => ({ label: String(r.layer), value: r.parameter_norm })),
          yLabel: "‖θ‖",
          color: "#2563eb",
          testid: "layer-norm-svg",
        }),
      );
      const shifts = rows.map((r) => ({ label: String(r.layer), value: r.relative_shift }));
      put(shiftBox,
        D.barChart({
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

    /** site.layers "auto": every layer's score, the chosen layers highlighted. */
    function renderSelection(selection) {
      scoreBox.hidden = !selection;
      if (!selection) return;
      const budget = selection.max_layers !== null && selection.max_layers !== undefined
        ? `max_layers ${selection.max_layers}`
        : `max_parameters ${fmtInt(selection.max_parameters)}`;
      put(scoreBox,
        D.barChart({
          title: `Layer selection score (chosen: ${selection.chosen.join(", ")})`,
          items: selection.layers.map((r) => ({
            label: String(r.layer),
            value: r.score,
            color: r.chosen ? "#16a34a" : "#cbd5e1",
            highlight: r.chosen ? "chosen" : null,
          })),
          yLabel: "first-order loss drop",
          color: "#cbd5e1",
          testid: "layer-score-svg",
        }),
        note(
          `layers "auto" (${budget}): the chosen layers in green, scored on ${selection.probe_batches} ` +
            `training batches (${fmtInt(selection.probe_tokens)} tokens) before training`,
          "selection-note",
        ),
      );
    }
  }

  function recorded(value) {
    return value === null || value === undefined ? "not recorded" : fmt(value);
  }

  // ---------------------------------------------------------------------------------------
  // Start

  function initKeyForm() {
    const input = document.getElementById("api-key");
    const state = document.getElementById("key-state");
    const show = () => {
      state.textContent = D.apiKey() ? "key saved" : "no key";
    };
    input.value = D.apiKey();
    show();
    document.getElementById("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      D.saveApiKey(input.value.trim());
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
})(window.SteerDashboard);
