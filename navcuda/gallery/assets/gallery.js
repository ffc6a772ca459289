// navcuda gallery: sorting, filtering, naming and marking of direction cards. No network access.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("navcuda-data").textContent);
  var storageKey = "navcuda-gallery/" + (data.set.directions || "") + "/" + (data.set.file || "");
  var container = document.getElementById("cards");
  var cards = Array.prototype.slice.call(container.querySelectorAll(".card"));
  var byIndex = {};
  var state = {};  // index -> {name, mark}
  data.directions.forEach(function (d) {
    byIndex[d.index] = d;
    state[d.index] = { name: d.name || "", mark: d.mark || null };
  });

  function storage() {
    try { return window.localStorage; } catch (e) { return null; }
  }
  (function restore() {
    var s = storage();
    if (!s) { return; }
    try {
      var saved = JSON.parse(s.getItem(storageKey) || "{}");
      Object.keys(saved).forEach(function (k) {
        if (state[k] && saved[k] && typeof saved[k] === "object") {
          if (typeof saved[k].name === "string") { state[k].name = saved[k].name; }
          if (saved[k].mark === "good" || saved[k].mark === "bad" || saved[k].mark === null) {
            state[k].mark = saved[k].mark;
          }
        }
      });
    } catch (e) { /* damaged entry: start from the file's names */ }
  })();
  function persist() {
    var s = storage();
    if (!s) { return; }
    try { s.setItem(storageKey, JSON.stringify(state)); } catch (e) { /* quota, private mode */ }
  }

  function cardIndex(card) { return Number(card.getAttribute("data-index")); }
  function show(card) {
    var st = state[cardIndex(card)];
    var input = card.querySelector(".name");
    if (document.activeElement !== input) { input.value = st.name; }
    card.setAttribute("data-mark", st.mark || "");
    Array.prototype.forEach.call(card.querySelectorAll(".mark"), function (b) {
      b.setAttribute("aria-pressed", String((b.getAttribute("data-mark") || null) === st.mark));
    });
    card.setAttribute("aria-label", "Direction " + cardIndex(card) +
      (st.name ? ": " + st.name : "") + (st.mark ? " (" + st.mark + ")" : ""));
  }
  function setMark(card, mark) {
    state[cardIndex(card)].mark = mark || null;
    persist(); show(card);
    // Re-filter: with "show unmarked", marking a card hides it and moves on to the next one.
    var list = visibleCards();
    var pos = list.indexOf(card);
    var hadFocus = card.contains(document.activeElement);
    if (!markMatches(state[cardIndex(card)].mark)) { card.hidden = true; updateCount(); }
    if (card.hidden && hadFocus) {
      var rest = list.slice(pos + 1).concat(list.slice(0, pos).reverse());
      var next = rest.filter(function (c) { return !c.hidden; })[0];
      if (next) { next.focus(); }
    }
  }
  function setName(card, name) {
    state[cardIndex(card)].name = name;
    persist(); show(card);
  }

  // ---------------------------------------------------------------- sort and filter
  var sortKey = document.getElementById("sort-key");
  var sortDir = document.getElementById("sort-dir");
  var filter = document.getElementById("filter");
  var markFilter = document.getElementById("mark-filter");
  var count = document.getElementById("count");
  var descending = false;

  function keyOf(i, key) {
    var d = byIndex[i];
    if (key === "index") { return i; }
    if (key === "value") { return d.value; }
    if (key === "amplitude") { return d.amplitude; }
    if (key === "name") { return state[i].name.toLowerCase() || null; }
    if (key.indexOf("score:") === 0) {
      var v = d.scores[key.slice(6)];
      return v === undefined ? null : v;
    }
    return null;
  }
  function applySort() {
    var key = sortKey.value;
    var sorted = cards.slice().sort(function (a, b) {
      var ia = cardIndex(a), ib = cardIndex(b);
      var va = keyOf(ia, key), vb = keyOf(ib, key);
      if (va === null && vb === null) { return ia - ib; }
      if (va === null) { return 1; }  // missing values last in either order
      if (vb === null) { return -1; }
      var c = typeof va === "number" && typeof vb === "number" ? va - vb
        : String(va).localeCompare(String(vb));
      if (c === 0) { c = ia - ib; }
      return descending ? -c : c;
    });
    sorted.forEach(function (card) { container.appendChild(card); });
  }
  function markMatches(mark) {
    var want = markFilter.value;
    return want === "all" || (want === "unmarked" ? mark === null : mark === want);
  }
  function updateCount() {
    var shown = cards.filter(function (c) { return !c.hidden; }).length;
    count.textContent = "showing " + shown + " of " + cards.length;
    document.getElementById("empty").hidden = shown !== 0;
  }
  function applyFilter() {
    var text = filter.value.trim().toLowerCase();
    cards.forEach(function (card) {
      var st = state[cardIndex(card)];
      card.hidden = !((!text || st.name.toLowerCase().indexOf(text) !== -1) &&
        markMatches(st.mark));
    });
    updateCount();
  }
  sortKey.addEventListener("change", applySort);
  sortDir.addEventListener("click", function () {
    descending = !descending;
    sortDir.setAttribute("aria-pressed", String(descending));
    sortDir.textContent = descending ? "descending" : "ascending";
    applySort();
  });
  filter.addEventListener("input", applyFilter);
  markFilter.addEventListener("change", applyFilter);

  // ---------------------------------------------------------------- export
  function namesObject() {
    var names = {};
    Object.keys(state).forEach(function (k) {
      names[k] = { name: state[k].name.trim() || null, mark: state[k].mark };
    });
    return { set: data.set, names: names };
  }
  function exportNames() {
    var obj = namesObject();
    var blob = new Blob([JSON.stringify(obj, null, 2) + "\n"], { type: "application/json" });
    var url = URL.createObjectURL(blob);
    var a = document.createElement("a");
    a.href = url; a.download = "names.json"; a.style.display = "none";
    document.body.appendChild(a); a.click();
    setTimeout(function () { URL.revokeObjectURL(url); a.remove(); }, 1000);
    return obj;
  }
  document.getElementById("export").addEventListener("click", exportNames);

  // ---------------------------------------------------------------- cards and keyboard
  function visibleCards() {
    return Array.prototype.filter.call(container.querySelectorAll(".card"),
      function (c) { return !c.hidden; });
  }
  function moveFocus(card, step) {
    var list = visibleCards();
    var i = list.indexOf(card);
    var next = list[Math.max(0, Math.min(list.length - 1, i + step))] || list[0];
    if (next) { next.focus(); next.scrollIntoView({ block: "nearest" }); }
  }
  cards.forEach(function (card) {
    var input = card.querySelector(".name");
    var before = "";
    input.addEventListener("focus", function () { before = input.value; });
    input.addEventListener("input", function () { setName(card, input.value); });
    input.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter") { ev.preventDefault(); setName(card, input.value); card.focus(); }
      else if (ev.key === "Escape") {
        ev.preventDefault(); input.value = before; setName(card, before); card.focus();
      }
      ev.stopPropagation();
    });
    Array.prototype.forEach.call(card.querySelectorAll(".mark"), function (b) {
      b.addEventListener("click", function () { setMark(card, b.getAttribute("data-mark")); });
    });
    card.addEventListener("keydown", function (ev) {
      if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.target.tagName === "INPUT") { return; }
      var k = ev.key;
      if (k === "Enter" && ev.target === card) { ev.preventDefault(); input.focus(); input.select(); }
      else if (k === "g") { setMark(card, "good"); }
      else if (k === "b") { setMark(card, "bad"); }
      else if (k === "n") { setMark(card, null); }
      else if (k === "p") { card.classList.toggle("previewing"); }
      else if (k === "j" || k === "ArrowDown") { ev.preventDefault(); moveFocus(card, 1); }
      else if (k === "k" || k === "ArrowUp") { ev.preventDefault(); moveFocus(card, -1); }
      else { return; }
      ev.stopPropagation();
    });
    card.addEventListener("focusout", function (ev) {
      if (!card.contains(ev.relatedTarget)) { card.classList.remove("previewing"); }
    });
    show(card);
  });
  document.addEventListener("keydown", function (ev) {
    var tag = ev.target.tagName;
    if (ev.altKey || ev.ctrlKey || ev.metaKey || tag === "INPUT" || tag === "SELECT") { return; }
    if (ev.key === "/") { ev.preventDefault(); filter.focus(); }
    else if (ev.key === "s") { sortDir.click(); }
    else if (ev.key === "e") { exportNames(); }
    else if ((ev.key === "j" || ev.key === "ArrowDown") && ev.target === document.body) {
      ev.preventDefault(); moveFocus(null, 1);
    }
  });
  filter.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" || ev.key === "Escape") {
      if (ev.key === "Escape") { filter.value = ""; applyFilter(); }
      ev.preventDefault();
      var first = visibleCards()[0];
      if (first) { first.focus(); }
    }
  });

  applySort();
  applyFilter();
  window.navcudaGallery = { state: state, namesObject: namesObject, exportNames: exportNames,
    storageKey: storageKey };
})();
