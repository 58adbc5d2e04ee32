// cgbot zone editor: polygons drawn on the camera's picture in normalised coordinates
// (0–1, origin top left), the same numbers the camera file holds.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("zone-data").textContent);
  const svg = document.getElementById("overlay");
  const list = document.getElementById("zone-list");
  const message = document.getElementById("editor-message");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const t = data.texts;
  const NS = "http://www.w3.org/2000/svg";
  let zones = data.zones.map((z) => ({ ...z, polygon: z.polygon.map((p) => p.slice()), rules: z.rules.map((r) => ({ ...r })) }));
  let current = zones.length ? 0 : -1;
  let counted = new Set();
  let dragging = null;

  const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;
  const el = (name, attrs, parent) => {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  };
  const point = (e) => {
    const r = svg.getBoundingClientRect();
    return [round((e.clientX - r.left) / r.width), round((e.clientY - r.top) / r.height)];
  };
  const say = (text, kind) => {
    if (!message) return;
    message.hidden = false;
    message.className = "flash " + kind;
    message.textContent = text;
  };

  function draw() {
    svg.innerHTML = "";
    data.detections.forEach((d, i) => {
      const [x1, y1, x2, y2] = d.box;
      const r = el("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: "det" + (counted.has(i) ? " counted" : "") }, svg);
      el("title", {}, r).textContent = d.label + " " + d.score.toFixed(2);
    });
    zones.forEach((z, i) => {
      const poly = el("polygon", { points: z.polygon.map((p) => p.join(",")).join(" "), class: i === current ? "current" : "", "data-zone": z.id }, svg);
      poly.addEventListener("click", (e) => { if (i !== current) { current = i; e.stopPropagation(); render(); } });
      if (z.polygon.length) {
        const label = el("text", { x: z.polygon[0][0], y: z.polygon[0][1], class: "zone-label" }, svg);
        label.textContent = z.name || z.id;
      }
    });
    if (current >= 0 && data.editable) {
      zones[current].polygon.forEach((p, vi) => {
        // The picture is wider than tall: round handles need a smaller vertical radius.
        const aspect = svg.clientWidth / Math.max(1, svg.clientHeight);
        const c = el("ellipse", { cx: p[0], cy: p[1], rx: 0.009, ry: 0.009 * aspect, class: "vertex", "data-index": vi }, svg);
        c.addEventListener("pointerdown", (e) => { dragging = vi; svg.setPointerCapture(e.pointerId); e.stopPropagation(); e.preventDefault(); });
        c.addEventListener("dblclick", (e) => { zones[current].polygon.splice(vi, 1); e.stopPropagation(); render(); });
      });
    }
  }

  // A new vertex goes into the edge nearest the click, so a shape can be refined.
  function insertVertex(poly, p) {
    if (poly.length < 3) { poly.push(p); return; }
    let best = 0, bestDist = Infinity;
    for (let i = 0; i < poly.length; i++) {
      const a = poly[i], b = poly[(i + 1) % poly.length];
      const dx = b[0] - a[0], dy = b[1] - a[1];
      const len = dx * dx + dy * dy || 1e-9;
      const s = Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len));
      const d = Math.hypot(a[0] + s * dx - p[0], a[1] + s * dy - p[1]);
      if (d < bestDist) { bestDist = d; best = i; }
    }
    poly.splice(best + 1, 0, p);
  }

  if (data.editable) {
    svg.addEventListener("click", (e) => {
      if (current < 0 || e.target.tagName === "ellipse") return;
      insertVertex(zones[current].polygon, point(e));
      render();
    });
    svg.addEventListener("pointermove", (e) => {
      if (dragging === null) return;
      zones[current].polygon[dragging] = point(e);
      draw();
    });
    svg.addEventListener("pointerup", () => { if (dragging !== null) { dragging = null; render(); } });
  }

  function field(labelText, value, placeholder, onChange) {
    const label = document.createElement("label");
    label.textContent = labelText;
    const input = document.createElement("input");
    input.type = "text";
    input.value = value == null ? "" : value;
    if (placeholder) input.placeholder = placeholder;
    input.addEventListener("change", () => onChange(input.value.trim()));
    label.appendChild(input);
    return label;
  }

  function renderList() {
    if (!list) return;
    list.innerHTML = "";
    zones.forEach((z, i) => {
      const box = document.createElement("div");
      box.className = "zone-item" + (i === current ? " current" : "");
      box.dataset.zone = z.id;
      const pick = document.createElement("button");
      pick.type = "button";
      pick.className = "select-zone";
      pick.textContent = t.select_zone + " " + (z.name || z.id) + " (" + z.polygon.length + ")";
      pick.addEventListener("click", () => { current = i; render(); });
      box.appendChild(pick);
      box.appendChild(field(t.zone_id, z.id, "", (v) => { z.id = v; render(); }));
      box.appendChild(field(t.zone_name, z.name, "", (v) => { z.name = v || null; render(); }));
      const events = document.createElement("div");
      events.className = "events";
      events.appendChild(document.createTextNode(t.events + ": "));
      data.events.forEach((ev) => {
        const label = document.createElement("label");
        const box2 = document.createElement("input");
        box2.type = "checkbox";
        box2.value = ev.id;
        box2.checked = z.rules.some((r) => r.event === ev.id);
        box2.addEventListener("change", () => {
          if (box2.checked) z.rules.push({ event: ev.id });
          else z.rules = z.rules.filter((r) => r.event !== ev.id);
          render();
        });
        label.appendChild(box2);
        label.appendChild(document.createTextNode(" " + ev.name));
        events.appendChild(label);
      });
      box.appendChild(events);
      // Overrides apply to every event of the zone; empty keeps the event's default.
      const first = z.rules[0] || {};
      const setAll = (key, value) => z.rules.forEach((r) => { if (value === "" || value == null) delete r[key]; else r[key] = value; });
      box.appendChild(field(t.min_dwell, first.min_dwell, t.placeholder_dwell, (v) => setAll("min_dwell", v)));
      box.appendChild(field(t.active_hours, (first.active || []).join(", "), t.placeholder_hours,
        (v) => setAll("active", v ? v.split(",").map((s) => s.trim()).filter(Boolean) : "")));
      box.appendChild(field(t.min_confidence, first.min_confidence, "0.5",
        (v) => setAll("min_confidence", v === "" ? "" : Number(v))));
      const del = document.createElement("button");
      del.type = "button";
      del.className = "delete-zone";
      del.textContent = t.delete_zone;
      del.addEventListener("click", () => { zones.splice(i, 1); current = Math.min(current, zones.length - 1); render(); });
      box.appendChild(del);
      list.appendChild(box);
    });
  }

  function render() { draw(); renderList(); }

  const post = (url, method, body) => fetch(url, {
    method, headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body), credentials: "same-origin",
  }).then((r) => r.json().then((j) => ({ ok: r.ok, status: r.status, body: j })));
  const payload = () => zones.map((z) => ({ id: z.id, name: z.name || null, polygon: z.polygon, rules: z.rules }));
  const base = "/api/cameras/" + encodeURIComponent(data.camera) + "/zones";

  const add = document.getElementById("add-zone");
  if (add) add.addEventListener("click", () => {
    let n = zones.length + 1;
    while (zones.some((z) => z.id === "zone-" + n)) n++;
    zones.push({ id: "zone-" + n, name: null, polygon: [], rules: [] });
    current = zones.length - 1;
    render();
  });
  const preview = document.getElementById("preview");
  if (preview) preview.addEventListener("click", () => post(base + "/preview", "POST", { zones: payload() }).then((r) => {
    if (!r.ok) { say(r.body.error, "error"); return; }
    counted = new Set(r.body.zones.flatMap((z) => z.counted.map((c) => c.detection)));
    say(t.would_count + ": " + counted.size, "notice");
    draw();
  }));
  const save = document.getElementById("save-zones");
  if (save) save.addEventListener("click", () => post(base, "PUT", { version: data.version, zones: payload() }).then((r) => {
    if (!r.ok) { say(r.body.error, "error"); return; }
    data.version = r.body.version;
    say(t.saved, "notice");
  }));

  const rebase = document.getElementById("rebase-view");
  if (rebase) rebase.addEventListener("click", () => {
    if (!window.confirm(rebase.dataset.confirm)) return;
    const note = document.getElementById("view-message");
    post("/api/cameras/" + encodeURIComponent(rebase.dataset.camera) + "/view/rebase", "POST", {}).then((r) => {
      note.hidden = false;
      note.className = "flash " + (r.ok ? "notice" : "error");
      note.textContent = r.ok ? rebase.dataset.done : r.body.error;
      if (r.ok) document.getElementById("view-likeness").textContent = "1.00";
    });
  });

  document.getElementById("picture").addEventListener("error", (e) => { e.target.style.minHeight = "360px"; });
  render();
  // The handles' radii follow the overlay's shape on screen, which is only known once the
  // picture has loaded (and changes with the window): drawn before, they came out as tall
  // ovals.
  new ResizeObserver(() => draw()).observe(svg);
})();
