/* faceaudit: sort a table of groups by clicking a column head, filter its rows with a search box.
   Inline, offline, optional: with scripts off the tables read exactly as printed. */
(function () {
  "use strict";
  function key(cell) {
    if (cell && cell.hasAttribute("data-sort")) {  /* a cell's own sort key: a number, else text (never parsed) */
      var given = cell.getAttribute("data-sort"), value = given.trim() === "" ? NaN : Number(given);
      return isNaN(value) ? {num: NaN, text: given.toLowerCase()} : {num: value, text: given};
    }
    var text = (cell ? cell.textContent : "").trim();
    var m = text.replace(/\u2212/g, "-").replace(/,(?=\d{3}\b)/g, "").match(/^[^\d+\-<]*([<]?)\s*([+\-]?\d+(?:\.\d+)?)/);
    if (m) { return {num: parseFloat(m[2]) - (m[1] ? 1e-9 : 0), text: text}; }
    return {num: NaN, text: text.toLowerCase()};
  }
  function compare(a, b) {
    var an = isNaN(a.num), bn = isNaN(b.num);
    if (!an && !bn) { return a.num - b.num; }
    if (an !== bn) { return an ? 1 : -1; }
    return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
  }
  function sortBy(table, heads, index) {
    var head = heads[index];
    var ascending = head.getAttribute("aria-sort") !== "ascending";
    heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
    head.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return {row: row, key: key(row.cells[index]), i: i};
    });
    rows.sort(function (a, b) {
      var c = compare(a.key, b.key);
      if (!ascending && !(isNaN(a.key.num) !== isNaN(b.key.num))) { c = -c; }
      return c || a.i - b.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
  }
  function addFilter(table, n) {
    var wrap = table.parentNode;
    var label = document.createElement("label");
    label.className = "table-filter";
    label.textContent = "Filter rows ";
    var input = document.createElement("input");
    input.type = "search";
    input.id = "filter-" + n;
    input.setAttribute("aria-controls", table.id);
    label.appendChild(input);
    wrap.parentNode.insertBefore(label, wrap);
    input.addEventListener("input", function () {
      var query = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.hidden = query !== "" && row.textContent.toLowerCase().indexOf(query) < 0;
      });
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table, n) {
    if (!table.tHead || !table.tBodies.length) { return; }
    table.id = table.id || "group-table-" + n;
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    heads.forEach(function (head, index) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      while (head.firstChild) { button.appendChild(head.firstChild); }
      head.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, heads, index); });
    });
    addFilter(table, n);
  });
}());
