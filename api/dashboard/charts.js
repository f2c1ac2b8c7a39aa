/* steering-service dashboard: line and bar charts drawn as inline SVG (no library). */
"use strict";

(function (D) {
  const { svgEl, fmt } = D;

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

  /** The horizontal grid lines and value labels of a y axis, as two groups (grid, labels) that
   * the caller fills further (x ticks) and appends. */
  function yGrid(yt, sy, m, pw) {
    const grid = svgEl("g", { class: "grid" });
    const labels = svgEl("g", { class: "tick-labels" });
    for (const v of yt.values) {
      grid.append(svgEl("line", { x1: m.l, x2: m.l + pw, y1: sy(v), y2: sy(v) }));
      labels.append(svgEl("text", { x: m.l - 6, y: sy(v) + 4, "text-anchor": "end" }, yt.label(v)));
    }
    return { grid, labels };
  }

  /** lineChart({title, series: [{name, points: [[x, y], ...], color}], xLabel, yLabel}).
   * A series may also have `label` (its legend and tooltip text, default name), `dash` (an SVG
   * stroke-dasharray) and `attrs` (more attributes of its polyline). legend: false leaves the
   * in-plot legend out (the caller draws its own). */
  function lineChart({ title, series, xLabel, yLabel, width = 560, height = 280, yDomain = null, testid, legend: withLegend = true }) {
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
    const { grid, labels } = yGrid(yt, sy, m, pw);
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
      const label = s.label || s.name;
      svg.append(
        svgEl("polyline", {
          points,
          fill: "none",
          stroke: s.color,
          "stroke-width": 2,
          "stroke-linejoin": "round",
          "stroke-dasharray": s.dash || null,
          class: "series",
          "data-series": s.name,
          testid: `series-${s.name}`,
          ...(s.attrs || {}),
        }),
      );
      if (s.points.length <= 80) {
        const dots = svgEl("g", { fill: s.color });
        for (const [x, y] of s.points) {
          dots.append(svgEl("circle", { cx: sx(x), cy: sy(y), r: 2.6 }, svgEl("title", {}, `${label} step ${x}: ${fmt(y)}`)));
        }
        svg.append(dots);
      }
      if (!withLegend) return;
      const last = s.points[s.points.length - 1];
      const lx = m.l + pw - 150;
      const ly = m.t + 4 + i * 16;
      legend.append(
        svgEl("rect", { x: lx, y: ly, width: 12, height: 3, fill: s.color }),
        svgEl("text", { x: lx + 16, y: ly + 5 }, `${label} ${last ? fmt(last[1]) : ""}`),
      );
    });
    svg.append(legend);
    return svg;
  }

  /** barChart({title, items: [{label, value | null, color?, highlight?}], yLabel, color}):
   * an item's own color wins; highlighted bars carry data-highlight (the chosen layers). */
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
    const { grid, labels } = yGrid(yt, sy, m, pw);
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
            {
              x: cx - barW / 2,
              y,
              width: barW,
              height: Math.max(0.5, m.t + ph - y),
              fill: d.color || color,
              class: d.highlight ? "bar bar-highlight" : "bar",
              testid: "bar",
              "data-layer": d.label,
              "data-highlight": d.highlight ? "true" : null,
            },
            svgEl("title", {}, `layer ${d.label}: ${fmt(d.value)}${d.highlight ? ` (${d.highlight})` : ""}`),
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

  D.lineChart = lineChart;
  D.barChart = barChart;
})((window.SteerDashboard = window.SteerDashboard || {}));
