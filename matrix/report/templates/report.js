"use strict";
// The report's only script: sortable tables, hover highlight, and the environment pair view.
// Names from the records are only ever set as textContent, never parsed as markup.

// Click a header to sort by it, again to reverse. Number cells carry their key in data-sort
// (a missing value is "inf", last in ascending order); other cells sort by their text.
document.addEventListener("click", function (ev) {
  const th = ev.target.closest("table.sortable th");
  if (!th) return;
  const table = th.closest("table");
  const col = th.cellIndex;
  const numeric = th.classList.contains("num");
  const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
  table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
  th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  const key = function (row) {
    const cell = row.cells[col];
    const raw = cell ? cell.dataset.sort ?? cell.textContent : "";
    if (!numeric) return raw;
    const n = parseFloat(raw);
    return isNaN(n) ? Infinity : n;
  };
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort(function (a, b) {
    const x = key(a), y = key(b);
    if (!numeric) return x.localeCompare(y, undefined, { numeric: true }) * dir;
    return (x < y ? -1 : x > y ? 1 : 0) * dir;
  });
  rows.forEach(function (r) { body.appendChild(r); });
});

// Hovering a mark or legend entry highlights its series in every chart of the section.
(function () {
  let lit = null;
  function clear() {
    if (!lit) return;
    lit.classList.remove("hovering");
    lit.querySelectorAll(".hl").forEach(function (x) { x.classList.remove("hl"); });
    lit = null;
  }
  document.addEventListener("mouseover", function (ev) {
    const mark = ev.target.closest ? ev.target.closest("[data-series]") : null;
    clear();
    if (!mark) return;
    lit = mark.closest("section");
    if (!lit) return;
    lit.classList.add("hovering");
    lit.querySelectorAll("[data-series]").forEach(function (x) {
      if (x.dataset.series === mark.dataset.series) x.classList.add("hl");
    });
  });
})();

// Environment vs environment: every (model, format, cache) of two chosen environments.
(function () {
  const source = document.getElementById("pairs-data");
  const pickA = document.getElementById("pair-a");
  const pickB = document.getElementById("pair-b");
  if (!source || !pickA || !pickB) return;
  const data = JSON.parse(source.textContent);
  const body = document.querySelector("#t-pairs tbody");
  data.envs.forEach(function (name, i) {
    [pickA, pickB].forEach(function (pick) {
      const option = document.createElement("option");
      option.value = String(i);
      option.textContent = name;
      pick.appendChild(option);
    });
  });
  pickA.value = String(data.default[0]);
  pickB.value = String(data.default[1]);

  // A number cell gets its sort key (and so its right alignment); a text cell none.
  function cell(text, sort, cls, title) {
    const td = document.createElement("td");
    td.textContent = text;
    if (sort !== undefined) td.dataset.sort = String(sort);
    if (cls) td.className = cls;
    if (title) td.title = title;
    return td;
  }
  function side(c) {
    if (!c) return cell("—", "inf");
    if (c.status !== "ok") return cell(c.status, "inf", "", c.reason || "");
    return cell(c.text + " (n=" + c.n + ")", c.median);
  }
  // Why two cells measured different things, or "" when their numbers can be compared.
  function incomparable(x, y) {
    if (!x) return "only in B";
    if (!y) return "only in A";
    if (x.status !== y.status) return "status " + x.status + " vs " + y.status;
    if (x.status !== "ok") return "no result in either (" + x.status + ")";
    if (x.eviction !== y.eviction) return "cache eviction " + x.eviction + " vs " + y.eviction;
    if (x.keras !== y.keras) return "Keras " + x.keras + " vs " + y.keras;
    return "";
  }
  function render() {
    const a = Number(pickA.value), b = Number(pickB.value);
    const pair = data.p && a !== b ? data.p[Math.min(a, b) + "," + Math.max(a, b)] : null;
    body.replaceChildren();
    data.rows.forEach(function (row, r) {
      const x = data.cells[a][r], y = data.cells[b][r];
      if (!x && !y) return;
      const tr = document.createElement("tr");
      row.forEach(function (v) { tr.appendChild(cell(v)); });
      tr.appendChild(side(x));
      tr.appendChild(side(y));
      const why = incomparable(x, y);
      const change = why ? null : y.median / x.median - 1;
      const p = pair && pair[r] ? pair[r][0] : null, verdict = pair && pair[r] ? pair[r][1] : null;
      if (change === null) {
        tr.appendChild(cell("—", "inf"));
      } else {
        const cls = change > data.threshold ? "slower" : change < -data.threshold ? "faster" : "";
        tr.appendChild(cell((change >= 0 ? "+" : "") + Math.round(change * 100) + " %", change, cls));
      }
      const tested = p !== null && p !== undefined && !why;
      tr.appendChild(tested ? cell(p.toPrecision(2), p) : cell("n/a", "inf"));
      tr.appendChild(why ? cell("not comparable: " + why, undefined, "incomparable")
        : cell(tested && verdict ? verdict : "", undefined, verdict || ""));
      body.appendChild(tr);
    });
  }
  pickA.addEventListener("change", render);
  pickB.addEventListener("change", render);
  render();
})();

// Axis views: a tab per axis; the figure and cache pickers choose which panels are shown.
// Without script the page shows the first axis at its default figure (the others stay hidden).
(function () {
  const controls = document.getElementById("axis-controls");
  if (!controls) return;
  const tabs = Array.from(controls.querySelectorAll("[role=tab]"));
  const metric = document.getElementById("axis-metric");
  const cache = document.getElementById("axis-cache");
  function show() {
    const selected = tabs.find(function (t) { return t.getAttribute("aria-selected") === "true"; });
    document.querySelectorAll(".axis-view").forEach(function (view) {
      view.hidden = view.dataset.axis !== selected.dataset.axis;
    });
    document.querySelectorAll(".axis-view figure").forEach(function (fig) {
      fig.hidden = fig.dataset.metric !== metric.value ||
        (cache !== null && fig.dataset.cache !== cache.value);
    });
  }
  tabs.forEach(function (tab) {
    tab.addEventListener("click", function () {
      tabs.forEach(function (t) { t.setAttribute("aria-selected", String(t === tab)); });
      show();
    });
  });
  metric.addEventListener("change", show);
  if (cache) cache.addEventListener("change", show);
  show();
})();
