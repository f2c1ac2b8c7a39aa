/* steering-service dashboard: the "create a fine-tuning job" form.
 *
 * Its fields come from the service, never from a list here: the method's own settings from its
 * entry in GET /v1/methods (config_schema, and `defaults` for the hyperparameters it sets), the
 * hyperparameters, compute block and other job fields from the API's own schema of a job
 * creation (JobCreate in openapi.json). An empty field means "the API's default" and is not
 * sent; its placeholder says what that default is. The API validates; a 400 is shown next to
 * the button, with the field it names outlined.
 */
"use strict";

(function (D) {
  const { el, put, fmtInt, api } = D;

  // JobCreate fields the form draws its own way (selects, the method block, a key=value box) or
  // leaves out: top-level `hyperparameters` and `gpus` are older spellings of
  // method.<type>.hyperparameters and compute.gpus; `integrations` (experiment trackers) are
  // left to the API and the SDK.
  const OWN = new Set(["model", "training_file", "validation_file", "method", "metadata"]);
  const LEFT_OUT = new Set(["hyperparameters", "gpus", "integrations"]);

  // ---------------------------------------------------------------------------------------
  // JSON schema -> field descriptions

  function deref(schema, root) {
    let s = schema || {};
    for (let i = 0; s.$ref && i < 10; i += 1) {
      const path = s.$ref.replace(/^#\//, "").split("/");
      let target = root;
      for (const part of path) target = target ? target[part] : undefined;
      s = { ...(target || {}), ...s, $ref: undefined };
    }
    return s;
  }

  function humanize(name) {
    return name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
  }

  /** The leaf fields of an object schema, nested objects flattened into dotted keys:
   * [{key: "adapter.rank", label, kind, values, integer, auto, default, description, group}]. */
  function fieldsOf(schema, root, prefix = [], group = "") {
    const s = deref(schema, root);
    const out = [];
    for (const [name, prop] of Object.entries(s.properties || {})) {
      if (!prefix.length && name === "type") continue;
      const path = [...prefix, name];
      let inner = deref(prop, root);
      let auto = false;
      if (inner.anyOf) {
        const alternatives = inner.anyOf.filter((a) => {
          if (a.type === "null") return false;
          if (a.const === "auto") {
            auto = true;
            return false;
          }
          return true;
        });
        inner = alternatives.length === 1 ? { ...deref(alternatives[0], root), title: inner.title } : { type: "json" };
      }
      const base = {
        key: path.join("."),
        label: prop.title || humanize(name), // (inner.title would be a class name)
        name,
        default: prop.default !== undefined ? prop.default : inner.default,
        description: prop.description || inner.description || "",
        auto,
        group: group || path[0],
      };
      if (inner.type === "object" && inner.properties) {
        out.push({ ...base, kind: "group", fields: fieldsOf(inner, root, path, group || name) });
      } else if (inner.enum) {
        out.push({ ...base, kind: "enum", values: inner.enum });
      } else if (inner.type === "boolean") {
        out.push({ ...base, kind: "bool" });
      } else if (inner.type === "integer" || inner.type === "number") {
        out.push({ ...base, kind: "number", integer: inner.type === "integer" });
      } else if (inner.type === "string") {
        out.push({ ...base, kind: "text" });
      } else if (inner.type === "array") {
        const itemType = deref(inner.items, root).type;
        out.push({ ...base, kind: "list", numeric: itemType === "integer" || itemType === "number" });
      } else {
        out.push({ ...base, kind: "json" });
      }
    }
    return out;
  }

  /** What the API does when the field is left empty, as the placeholder shows it. */
  function defaultText(field, methodDefaults) {
    if (methodDefaults && field.group === "hyperparameters" && field.name in methodDefaults) {
      return String(methodDefaults[field.name]);
    }
    const d = field.default;
    if (d === "auto" && /^auto:/.test(field.description)) return field.description;
    if (d === null || d === undefined) {
      const said = /\(default: ([^);]+)\)/.exec(field.description); // "ranks (default: gpus, or 1 on CPU)"
      if (said) return said[1];
      return field.kind === "list" ? "none (comma-separated)" : "none";
    }
    if (Array.isArray(d)) return d.join(", ");
    if (typeof d === "object") return JSON.stringify(d);
    return String(d);
  }

  // ---------------------------------------------------------------------------------------
  // Field descriptions -> inputs, and back to values

  /** One input; `param` is the request's path to it (what an API error's `param` names). */
  function inputFor(field, param, methodDefaults) {
    const shown = defaultText(field, methodDefaults);
    const common = { "data-param": param, "data-key": field.key, testid: "create-field", title: field.description || null };
    if (field.kind === "enum" || field.kind === "bool") {
      const values = field.kind === "bool" ? [true, false] : field.values;
      return el(
        "select",
        common,
        el("option", { value: "" }, `default (${shown})`),
        values.map((v, i) => el("option", { value: String(i) }, String(v))),
      );
    }
    if (field.kind === "json") return el("input", { ...common, type: "text", placeholder: `default (${shown}), JSON` });
    // Text inputs, numbers included: the API, not the browser, judges the value.
    return el("input", {
      ...common,
      type: "text",
      inputmode: field.kind === "number" ? "decimal" : null,
      placeholder: /^auto\b/.test(shown) ? shown : `default: ${shown}`,
      spellcheck: "false",
      autocomplete: "off",
    });
  }

  function numberOr(text) {
    const n = Number(text);
    return text !== "" && Number.isFinite(n) ? n : text;
  }

  /** The value a field sends, or undefined when it is left to the API's default. */
  function valueOf(field, input) {
    const raw = input.value.trim();
    if (raw === "") return undefined;
    switch (field.kind) {
      case "enum":
        return field.values[Number(raw)];
      case "bool":
        return raw === "0";
      case "number":
        return field.auto && raw.toLowerCase() === "auto" ? "auto" : numberOr(raw);
      case "list":
        if (field.auto && raw.toLowerCase() === "auto") return "auto";
        return raw.split(/[\s,]+/).filter(Boolean).map((v) => (field.numeric ? numberOr(v) : v));
      case "json":
        try {
          return JSON.parse(raw);
        } catch (_e) {
          return raw;
        }
      default:
        return raw;
    }
  }

  function setPath(target, path, value) {
    let node = target;
    for (const part of path.slice(0, -1)) node = node[part] = node[part] || {};
    node[path[path.length - 1]] = value;
  }

  /** Draws fields (groups as fieldsets) into a grid; returns [{field, input, path}]. */
  function drawFields(fields, container, paramPrefix, methodDefaults, keep) {
    const drawn = [];
    const grid = el("div", { class: "grid-form" });
    const groups = [];
    for (const field of fields) {
      if (field.kind === "group") {
        const box = el("fieldset", { class: "subgroup", "data-group": field.key }, el("legend", {}, field.label));
        drawn.push(...drawFields(field.fields, box, paramPrefix, methodDefaults, keep));
        groups.push(box);
        continue;
      }
      const param = [...paramPrefix, field.key].join(".");
      const input = inputFor(field, param, methodDefaults);
      const kept = keep.get(field.key);
      if (kept !== undefined && [...(input.options || [{ value: kept }])].some((o) => o.value === kept)) input.value = kept;
      grid.append(el("label", { title: field.description || null }, field.label, input));
      drawn.push({ field, input, path: field.key.split(".") });
    }
    if (grid.children.length) container.append(grid);
    container.append(...groups);
    return drawn;
  }

  // ---------------------------------------------------------------------------------------
  // The form

  /** The create-job form; onCreated(job) runs after a job was created. */
  D.jobForm = function jobForm({ onCreated }) {
    const modelSelect = el("select", { name: "model", testid: "create-model", "data-param": "model" });
    const fileSelect = el("select", { name: "training_file", testid: "create-file", "data-param": "training_file" });
    const validationSelect = el("select", { name: "validation_file", testid: "create-validation-file", "data-param": "validation_file" });
    const methodSelect = el("select", { name: "method", testid: "create-method", "data-param": "method.type" });
    const methodNote = el("p", { class: "muted small method-note", testid: "create-method-description" });
    const jobBox = el("div", {});
    const hpBox = el("div", { testid: "create-hyperparameters" });
    const methodBox = el("div", { testid: "create-method-fields" });
    const computeBox = el("div", { testid: "create-compute" });
    const metadataInput = el("textarea", {
      rows: 3, testid: "create-metadata", "data-param": "metadata", spellcheck: "false", placeholder: "key=value, one a line",
    });
    const errorBox = el("div", { class: "form-error", role: "alert", testid: "create-error", hidden: true });
    const createButton = el("button", { type: "submit", testid: "create-button" }, "Create job");
    const section = (title, testid, open, ...content) =>
      el("details", { class: "form-section", open, testid }, el("summary", {}, title), ...content);
    const hpTitle = el("span", {}, "Hyperparameters");
    const methodTitle = el("span", {}, "Method settings");
    const form = el(
      "form",
      { class: "card form", testid: "create-form", novalidate: true, autocomplete: "off" },
      el("h2", {}, "Create a fine-tuning job"),
      el(
        "div",
        { class: "grid-form" },
        el("label", {}, "Base model", modelSelect),
        el("label", {}, "Training file", fileSelect),
        el("label", {}, "Validation file", validationSelect),
        el("label", {}, "Method", methodSelect),
      ),
      methodNote,
      jobBox,
      el("p", { class: "muted small" }, "Empty fields take the API's default, shown in grey; only the fields you fill are sent."),
      section(hpTitle, "create-section-hyperparameters", true, hpBox),
      section(methodTitle, "create-section-method", true, methodBox),
      section("Compute", "create-section-compute", false, computeBox),
      section("Metadata", "create-section-metadata", false, el("label", { class: "wide" }, "Key-value pairs", metadataInput)),
      el("div", { class: "row form-actions" }, createButton),
      errorBox,
    );

    let methods = [];
    let schema = null; // openapi.json, null until loaded (or when the API does not serve it)
    let jobFields = []; // seed, suffix, compute, ... (JobCreate's own fields)
    let hpFields = [];
    let drawn = { job: [], hp: [], method: [], compute: [] };

    function keptValues() {
      const keep = new Map();
      for (const entries of Object.values(drawn)) {
        for (const { field, input } of entries) {
          if (input.value !== "") keep.set(field.key, input.value);
        }
      }
      return keep;
    }

    /** (Re)draw everything that depends on the method and the schema, keeping typed values. */
    function draw() {
      const keep = keptValues();
      const method = methods.find((m) => m.id === methodSelect.value);
      const type = method ? method.id : methodSelect.value;
      methodNote.textContent = method ? method.description : "";
      hpTitle.textContent = `Hyperparameters${method ? ` (defaults of ${method.id})` : ""}`;
      methodTitle.textContent = `Method settings${method ? `: ${method.id}` : ""}`;
      put(jobBox);
      put(hpBox);
      put(methodBox);
      put(computeBox);
      const defaults = method ? method.defaults : null;
      const scalars = jobFields.filter((f) => f.kind !== "group");
      let groups = jobFields.filter((f) => f.kind === "group");
      if (groups.length === 1) groups = groups[0].fields; // the section's title names it
      drawn = { job: [], hp: [], method: [], compute: [] };
      drawn.job = drawFields(scalars, jobBox, [], defaults, keep);
      drawn.hp = drawFields(hpFields, hpBox, ["method", type], defaults, keep);
      if (method) {
        const own = fieldsOf(method.config_schema, method.config_schema);
        drawn.method = drawFields(own, methodBox, ["method", type], defaults, keep);
        if (!own.length) methodBox.append(D.note(`${method.id} has no settings of its own`));
      }
      drawn.compute = drawFields(groups, computeBox, [], defaults, keep);
      if (!schema) {
        const text = "the API's schema (openapi.json) did not load: these are left to the API's defaults";
        hpBox.append(D.note(text, "create-schema-note"));
        computeBox.append(D.note(text));
      }
    }

    async function loadModels() {
      const models = await api("/v1/models");
      const base = models.data.filter((m) => m.kind !== "adapter" && m.kind !== "checkpoint");
      const chosen = modelSelect.value;
      put(modelSelect, ...base.map((m) => el("option", { value: m.id }, m.id)));
      if (chosen) modelSelect.value = chosen;
    }

    // The methods come from the service's registry (GET /v1/methods), never from a list here.
    async function loadMethods() {
      const answer = await api("/v1/methods");
      methods = answer.data;
      const chosen = methodSelect.value || "post_block";
      put(methodSelect, ...methods.map((m) => el("option", { value: m.id, title: m.description }, m.id)));
      if (methods.some((m) => m.id === chosen)) methodSelect.value = chosen;
    }

    async function loadSchema() {
      try {
        schema = await api("openapi.json");
      } catch (_exc) {
        schema = null; // the form still works: those fields are left to the API
        return;
      }
      const create = deref((schema.components.schemas || {}).JobCreate, schema);
      const rest = { ...create, properties: {} };
      for (const [name, prop] of Object.entries(create.properties || {})) {
        if (!OWN.has(name) && !LEFT_OUT.has(name)) rest.properties[name] = prop;
      }
      jobFields = fieldsOf(rest, schema);
      const hp = (create.properties || {}).hyperparameters;
      const hpSchema = hp ? deref((hp.anyOf || [hp]).find((a) => a.$ref || a.properties) || hp, schema) : {};
      hpFields = fieldsOf(hpSchema, schema, [], "hyperparameters").map((f) => ({ ...f, key: `hyperparameters.${f.key}` }));
    }

    /** Fill both file selects with the processed files, newest first; select `select` (a new
     * upload) as the training file. */
    async function loadFiles(select) {
      const files = await api("/v1/files?purpose=fine-tune&limit=1000");
      const processed = files.data.filter((f) => f.status === "processed");
      processed.sort((a, b) => b.created_at - a.created_at);
      const option = (f) => el("option", { value: f.id }, `${f.filename} · ${f.id} · ${fmtInt(f.n_examples)} examples`);
      const chosen = select || fileSelect.value;
      const chosenValidation = validationSelect.value;
      if (!processed.length) {
        put(fileSelect, el("option", { value: "", disabled: true, selected: true }, "no processed files: upload one"));
      } else {
        put(fileSelect, ...processed.map(option));
        if (chosen && processed.some((f) => f.id === chosen)) fileSelect.value = chosen;
      }
      put(validationSelect, el("option", { value: "" }, "none"), ...processed.map(option));
      if (chosenValidation && processed.some((f) => f.id === chosenValidation)) validationSelect.value = chosenValidation;
    }

    function body() {
      const type = methodSelect.value;
      const request = { model: modelSelect.value, training_file: fileSelect.value };
      if (validationSelect.value) request.validation_file = validationSelect.value;
      const block = {};
      for (const { field, input, path } of [...drawn.hp, ...drawn.method]) {
        const value = valueOf(field, input);
        if (value !== undefined) setPath(block, path, value);
      }
      request.method = Object.keys(block).length ? { type, [type]: block } : { type };
      for (const { field, input, path } of [...drawn.job, ...drawn.compute]) {
        const value = valueOf(field, input);
        if (value !== undefined) setPath(request, path, value);
      }
      const lines = metadataInput.value.split("\n").map((l) => l.trim()).filter(Boolean);
      if (lines.length) {
        request.metadata = {};
        for (const [i, line] of lines.entries()) {
          const at = line.indexOf("=");
          if (at < 1) throw new D.ApiError(0, `metadata line ${i + 1}: "${line}" is not key=value`, null, "metadata");
          request.metadata[line.slice(0, at).trim()] = line.slice(at + 1).trim();
        }
      }
      return request;
    }

    function showFormError(exc) {
      errorBox.hidden = false;
      errorBox.textContent = exc.status ? D.errorText(exc) : `Error: ${exc.message}`;
      for (const node of form.querySelectorAll(".invalid")) node.classList.remove("invalid");
      const param = exc instanceof D.ApiError ? exc.param : null;
      if (!param) return;
      // the input the error names, or the closest one above it (a group named by its path)
      let best = null;
      for (const node of form.querySelectorAll("[data-param]")) {
        const p = node.getAttribute("data-param");
        if (param === p || param.startsWith(`${p}.`) || p.startsWith(`${param}.`)) {
          if (!best || p.length > best.getAttribute("data-param").length) best = node;
        }
      }
      if (best) {
        best.classList.add("invalid");
        const details = best.closest("details");
        if (details) details.open = true;
      }
    }

    function clearFormError() {
      errorBox.hidden = true;
      errorBox.textContent = "";
      for (const node of form.querySelectorAll(".invalid")) node.classList.remove("invalid");
    }

    methodSelect.addEventListener("change", draw);
    for (const kind of ["input", "change"]) {
      form.addEventListener(kind, (event) => event.target.classList.remove("invalid")); // being fixed
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      createButton.disabled = true;
      try {
        const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body() });
        clearFormError();
        onCreated(job);
      } catch (exc) {
        showFormError(exc);
      } finally {
        createButton.disabled = false;
      }
    });

    return {
      node: form,
      loadFiles,
      /** Load the models, methods, files and schema, then draw the fields. */
      async load() {
        await Promise.all([loadModels(), loadMethods(), loadFiles(), loadSchema()]);
        draw();
      },
    };
  };
})((window.SteerDashboard = window.SteerDashboard || {}));
