/* steering-service dashboard: what every page shares (loaded first).
 *
 * DOM helpers, number and time formats, API access with the saved key, the error banner,
 * downloads, and adapter look-ups. Everything is put on window.SteerDashboard for the other
 * scripts (charts.js, job_form.js, compare.js, app.js).
 */
"use strict";

(function (D) {
  const KEY_STORAGE = "steer.dashboard.apiKey";
  D.FINAL = new Set(["succeeded", "failed", "cancelled"]);
  D.DASH = "—"; // what a value that is not there reads as
  const SVG_NS = "http://www.w3.org/2000/svg";

  // ---------------------------------------------------------------------------------------
  // DOM helpers

  /** el("div", {class: "x", testid: "y", onclick: fn}, child, "text", ...) */
  D.el = function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  };

  D.svgEl = function svgEl(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  };

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
  D.put = function put(node, ...children) {
    node.replaceChildren(
      ...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false),
    );
  };

  // ---------------------------------------------------------------------------------------
  // Formats

  D.fmt = function fmt(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return D.DASH;
    if (typeof value !== "number") return String(value);
    if (value === 0) return "0";
    const abs = Math.abs(value);
    if (Number.isInteger(value) && abs < 1e6) return String(value);
    if (abs >= 1e4 || abs < 1e-3) return value.toExponential(2);
    return String(Number(value.toPrecision(3)));
  };

  D.fmtInt = function fmtInt(value) {
    return value === null || value === undefined ? D.DASH : Number(value).toLocaleString("en-US");
  };

  D.fmtBytes = function fmtBytes(value) {
    if (value === null || value === undefined) return D.DASH;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = value;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${i === 0 ? v : v.toFixed(1)} ${units[i]} (${D.fmtInt(value)} bytes)`;
  };

  D.fmtTime = function fmtTime(unix) {
    if (!unix) return D.DASH;
    return new Date(unix * 1000).toLocaleString();
  };

  D.fmtClock = function fmtClock(unix) {
    if (!unix) return "";
    return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
  };

  D.badge = function badge(status) {
    return D.el("span", { class: `badge badge-${status}`, testid: "status-badge" }, status);
  };

  D.facts = function facts(rows) {
    return D.el(
      "dl",
      { class: "facts" },
      rows.map(([label, value, testid]) => [
        D.el("dt", {}, label),
        D.el("dd", { testid }, value === null || value === undefined ? D.DASH : value),
      ]),
    );
  };

  D.note = function note(text, testid) {
    return D.el("p", { class: "note", testid }, text);
  };

  /** A chart-sized placeholder with the chart's title and why nothing is drawn. */
  D.emptyChart = function emptyChart(title, text, testid) {
    return D.el("div", { class: "chart-empty" }, D.el("div", { class: "chart-title" }, title), D.note(text, testid));
  };

  // ---------------------------------------------------------------------------------------
  // API access, the key, and the error banner

  class ApiError extends Error {
    constructor(status, message, code, param) {
      super(message);
      this.status = status;
      this.code = code || null;
      this.param = param || null;
    }
  }
  D.ApiError = ApiError;

  D.apiKey = function apiKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch (_e) {
      return "";
    }
  };

  D.saveApiKey = function saveApiKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch (_e) {
      /* storage disabled: nothing to keep */
    }
  };

  D.apiUrl = function apiUrl(path) {
    return path.replace(/^\//, ""); // relative to the page: <root>/dashboard -> <root>/v1/...
  };

  D.request = async function request(path, { method = "GET", json, body } = {}) {
    const headers = {};
    const key = D.apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let payload = body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(D.apiUrl(path), { method, headers, body: payload, cache: "no-store" });
    } catch (exc) {
      throw new ApiError(0, `network error: ${exc.message}`, "network_error");
    }
    if (!response.ok) {
      let message = response.statusText || "request failed";
      let code = null;
      let param = null;
      try {
        const data = await response.json();
        if (data && data.error && data.error.message) {
          ({ message, code, param } = data.error);
        }
      } catch (_e) {
        /* not JSON */
      }
      throw new ApiError(response.status, message, code, param);
    }
    return response;
  };

  D.api = async function api(path, options) {
    return (await D.request(path, options)).json();
  };

  /** "400 (invalid_request): message", the way the banner and the forms show an error. */
  D.errorText = function errorText(exc) {
    const status = exc instanceof ApiError && exc.status ? `${exc.status} ` : "";
    const code = exc instanceof ApiError && exc.code ? `(${exc.code}) ` : "";
    return `Error ${status}${code}: ${exc.message || exc}`.replace(" :", ":");
  };

  let errorSource = null;

  D.showError = function showError(exc, source) {
    document.getElementById("error-text").textContent = D.errorText(exc);
    document.getElementById("error-banner").hidden = false;
    errorSource = source || "action";
  };

  /** Hide the banner if it shows an error of this source (all errors when source is omitted). */
  D.clearError = function clearError(source) {
    if (source && errorSource !== source) return;
    document.getElementById("error-banner").hidden = true;
    errorSource = null;
  };

  // ---------------------------------------------------------------------------------------
  // Downloads: a plain link without a key; with one, fetch with the header and save a Blob.

  D.download = async function download(path, fallbackName, button) {
    const link = D.el("a", { download: "", style: "display:none" });
    let objectUrl = null;
    button.disabled = true;
    try {
      if (D.apiKey()) {
        const response = await D.request(path);
        const disposition = response.headers.get("Content-Disposition") || "";
        const match = /filename="?([^";]+)"?/.exec(disposition);
        link.download = match ? match[1] : `${fallbackName.replace(/[^A-Za-z0-9_.-]/g, "_")}.tar.gz`;
        objectUrl = URL.createObjectURL(await response.blob());
        link.href = objectUrl;
      } else {
        link.href = D.apiUrl(path);
      }
      document.body.append(link);
      link.click();
      D.clearError("action");
    } catch (exc) {
      D.showError(exc, "action");
    } finally {
      button.disabled = false;
      link.remove();
      if (objectUrl) setTimeout(() => URL.revokeObjectURL(objectUrl), 60000);
    }
  };

  // ---------------------------------------------------------------------------------------
  // Adapters by id: a job's fine_tuned_model is an adapter id; the adapter may have been
  // deleted since (404). Answers are kept until the next route change (D.forgetAdapters).

  let adapters = new Map();

  /** Resolves to {adapter} when found, {deleted: true} on a 404, {error} otherwise. */
  D.lookupAdapter = function lookupAdapter(id) {
    if (!adapters.has(id)) {
      const answer = D.api(`/v1/adapters/${encodeURIComponent(id)}`).then(
        (adapter) => ({ adapter }),
        (error) => {
          if (error instanceof ApiError && error.status === 404) return { deleted: true };
          adapters.delete(id); // ask again next time
          return { error };
        },
      );
      adapters.set(id, answer);
    }
    return adapters.get(id);
  };

  D.forgetAdapters = function forgetAdapters() {
    adapters = new Map();
  };

  /** A job's adapter: its name@version linked to its page, "deleted" (no link) once it is gone,
   * its id while the look-up runs, its id linked when the look-up failed otherwise. */
  D.adapterCell = function adapterCell(id, found) {
    if (!id) return D.DASH;
    if (found && found.deleted) {
      return D.el("span", { class: "adapter-deleted", testid: "adapter-deleted", title: `adapter ${id} was deleted` }, "deleted");
    }
    if (found && found.adapter) {
      return D.el(
        "a",
        { href: `#/adapters/${encodeURIComponent(id)}`, testid: "adapter-link", title: id },
        found.adapter.reference || `${found.adapter.name}@${found.adapter.version}`,
      );
    }
    if (found && found.error) {
      return D.el("a", { href: `#/adapters/${encodeURIComponent(id)}`, testid: "adapter-link", title: found.error.message }, id);
    }
    return D.el("span", { class: "muted", testid: "adapter-pending" }, id);
  };
})((window.SteerDashboard = window.SteerDashboard || {}));
