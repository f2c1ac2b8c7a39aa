/* steering-service dashboard: #/compare/{id},{id},... — several jobs side by side.
 *
 * One loss plot (one colour per job; training loss solid, validation loss dashed), one accuracy
 * plot when a job measured accuracy, and a table of every setting and result with the rows that
 * differ between the jobs highlighted. Refreshed while a job still runs.
 */
"use strict";

(function (D) {
  const { el, put, api, DASH } = D;
  const REFRESH_MS = 3000;
  const PALETTE = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"];

  D.jobColor = (i) => PALETTE[i % PALETTE.length];

  function flatten(value, prefix, out) {
    for (const [key, v] of Object.entries(value || {})) {
      if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) {
        flatten(v, `${prefix}${key}.`, out);
      } else {
        out[`${prefix}${key}`] = v;
      }
    }
    return out;
  }

  /** Exact text of a setting (numbers unrounded: 9e-4 and 9.1e-4 must not look alike). */
  function show(v) {
    if (v === null || v === undefined) return DASH;
    if (Array.isArray(v)) return v.length ? v.join(", ") : "[]";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function seriesOf(rows) {
    const by = {};
    for (const r of rows) {
      if (typeof r.value !== "number" || !Number.isFinite(r.value)) continue;
      (by[r.name] = by[r.name] || []).push([r.step, r.value]);
    }
    for (const points of Object.values(by)) points.sort((a, b) => a[0] - b[0]);
    return by;
  }

  /** The table's rows: [section, key, label, [text per job]], from each job's object. */
  function settingRows(entries) {
    const sections = [
      ["Job", (e) => ({
        model: e.job.model,
        method: e.job.method && e.job.method.type,
        training_file: e.job.training_file,
        validation_file: e.job.validation_file,
        seed: e.job.seed,
        suffix: e.job.user_provided_suffix,
      })],
      ["Method settings", (e) => {
        const method = e.job.method || {};
        const block = { ...(method[method.type] || {}) };
        delete block.hyperparameters; // the resolved values are in their own section
        return flatten(block, "", {});
      }],
      ["Hyperparameters", (e) => flatten(e.job.hyperparameters, "", {})],
      ["Compute", (e) => flatten(e.job.compute, "", {})],
      ["Results", (e) => {
        const last = (name) => (e.series[name] ? e.series[name][e.series[name].length - 1][1] : null);
        const best = (name) => (e.series[name] ? Math.min(...e.series[name].map((p) => p[1])) : null);
        return {
          status: e.job.status,
          steps: e.job.progress ? e.job.progress.step : null,
          trained_tokens: e.job.trained_tokens,
          "final train_loss": last("train_loss"),
          "best valid_loss": best("valid_loss"),
          "final valid_mean_token_accuracy": last("valid_mean_token_accuracy"),
          adapter: e.adapterText,
        };
      }],
    ];
    const rows = [];
    for (const [section, read] of sections) {
      const values = entries.map((e) => read(e));
      const keys = [];
      for (const v of values) for (const k of Object.keys(v)) if (!keys.includes(k)) keys.push(k);
      for (const key of keys) rows.push([section, key, values.map((v) => show(v[key]))]);
    }
    return rows;
  }

  function legendItem(entry) {
    const job = entry.job;
    return el(
      "li",
      { testid: "compare-legend-item", "data-job": entry.id },
      el("span", { class: "swatch", style: `background:${entry.color}` }),
      el("a", { href: `#/jobs/${encodeURIComponent(entry.id)}` }, el("code", {}, entry.id)),
      job
        ? el("span", { class: "muted" }, ` ${job.model} · ${(job.method && job.method.type) || DASH} · `, D.badge(job.status))
        : el("span", { class: "bad" }, ` could not load: ${entry.error.message}`),
    );
  }

  D.comparePage = function comparePage(view, { gen, current, poll }, ids) {
    const legendBox = el("ul", { class: "compare-legend", testid: "compare-legend" });
    const lossBox = el("div", { class: "chart", testid: "compare-loss-chart" }, D.note("loading…"));
    const accBox = el("div", { class: "chart", testid: "compare-accuracy-chart" });
    const tableBox = el("div", { class: "table-scroll" }, D.note("loading…"));
    const onlyDiff = el("input", { type: "checkbox", testid: "compare-only-differences" });
    view.append(
      el("p", {}, el("a", { href: "#/jobs" }, "← all jobs")),
      el("h1", {}, `Compare ${ids.length} job${ids.length === 1 ? "" : "s"}`),
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Curves ", el("span", { class: "muted small" }, "(solid: training loss, dashed: validation loss)")),
        legendBox,
        el("div", { class: "chart-row" }, lossBox, accBox),
      ),
      el(
        "section",
        { class: "card" },
        el(
          "div",
          { class: "row" },
          el("h2", {}, "Settings and results ", el("span", { class: "muted small" }, "(rows that differ are highlighted)")),
          el("label", { class: "muted small push-right" }, onlyDiff, " only rows that differ"),
        ),
        tableBox,
      ),
    );
    onlyDiff.addEventListener("change", () => tableBox.classList.toggle("only-diff", onlyDiff.checked));

    let finalPolls = 0;
    let drawnKey = "";

    async function load(id, i) {
      const entry = { id, color: D.jobColor(i), job: null, series: {}, adapterText: null };
      try {
        const path = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;
        const [job, metrics] = await Promise.all([api(path), api(`${path}/metrics`).catch(() => ({ data: [] }))]);
        entry.job = job;
        entry.series = seriesOf(metrics.data || []);
        if (job.fine_tuned_model) {
          const found = await D.lookupAdapter(job.fine_tuned_model);
          entry.adapterText = found.deleted ? "deleted" : found.adapter ? found.adapter.reference : job.fine_tuned_model;
        }
      } catch (exc) {
        entry.error = exc;
      }
      return entry;
    }

    function render(entries) {
      const key = JSON.stringify(entries.map((e) => [e.job, e.series, e.adapterText, e.error && e.error.message]));
      if (key === drawnKey) return;
      drawnKey = key;
      put(legendBox, entries.map(legendItem));
      const loss = [];
      const accuracy = [];
      for (const e of entries) {
        const attrs = { "data-job": e.id };
        for (const [name, dash] of [["train_loss", null], ["valid_loss", "6 4"]]) {
          if (e.series[name]) loss.push({ name, label: `${e.id} ${name}`, points: e.series[name], color: e.color, dash, attrs });
        }
        if (e.series.valid_mean_token_accuracy) {
          accuracy.push({ name: "valid_mean_token_accuracy", label: e.id, points: e.series.valid_mean_token_accuracy, color: e.color, attrs });
        }
      }
      put(lossBox,
        loss.length
          ? D.lineChart({ title: "Loss", series: loss, xLabel: "step", yLabel: "loss", legend: false, testid: "compare-loss-svg" })
          : D.emptyChart("Loss", "no loss recorded for these jobs yet", "compare-loss-note"),
      );
      const inUnit = accuracy.every((s) => s.points.every(([, v]) => v >= 0 && v <= 1));
      put(accBox,
        accuracy.length
          ? D.lineChart({
            title: "Validation mean token accuracy", series: accuracy, xLabel: "step", yLabel: "accuracy",
            yDomain: inUnit ? [0, 1] : null, legend: false, testid: "compare-accuracy-svg",
          })
          : D.emptyChart("Validation accuracy", "no accuracy metric for these jobs", "compare-accuracy-note"),
      );
      const shown = entries.filter((e) => e.job);
      if (!shown.length) {
        put(tableBox, D.note("none of these jobs could be loaded"));
        return;
      }
      let section = null;
      const body = [];
      for (const [name, key, values] of settingRows(shown)) {
        if (name !== section) {
          section = name;
          body.push(el("tr", { class: "section-row" }, el("th", { colspan: shown.length + 1 }, name)));
        }
        const differs = new Set(values).size > 1;
        body.push(
          el(
            "tr",
            { class: differs ? "diff" : null, testid: "compare-row", "data-key": `${name}:${key}`, "data-differs": String(differs) },
            el("th", { scope: "row" }, key),
            values.map((v) => el("td", { class: "num" }, v)),
          ),
        );
      }
      put(tableBox,
        el(
          "table",
          { class: "compare", testid: "compare-table" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              el("th", {}, "Setting"),
              shown.map((e) => el("th", { "data-job": e.id }, el("span", { class: "swatch", style: `background:${e.color}` }), el("code", {}, e.id))),
            ),
          ),
          el("tbody", {}, body),
        ),
      );
    }

    poll(gen, REFRESH_MS, async () => {
      const entries = await Promise.all(ids.map(load));
      if (!current(gen)) return false;
      render(entries);
      if (entries.every((e) => e.error || D.FINAL.has(e.job.status))) {
        finalPolls += 1; // one more round after the last job finished, for its last metrics
        return finalPolls < 2;
      }
      return true;
    });
  };
})((window.SteerDashboard = window.SteerDashboard || {}));
