/* The admin page: charts (Chart.js, served by the connector), the CRM check and live outbox counts. */
(function () {
  "use strict";

  var ROOT = document.body.getAttribute("data-root") || "";  // the path a proxy serves the connector under

  function drawCharts() {
    var data = JSON.parse(document.getElementById("admin-charts").textContent);
    if (typeof window.Chart !== "function") {
      document.getElementById("chart-error").hidden = false;
      return;
    }
    var common = {responsive: true, maintainAspectRatio: false, animation: false,
                  plugins: {legend: {position: "bottom"}}};
    window.adminCharts = {
      perHour: new window.Chart(document.getElementById("chats-per-hour"), {
        type: "bar",
        data: {labels: data.hours, datasets: [{label: "Chats", data: data.chats_per_hour, backgroundColor: "#0b5cad"}]},
        options: Object.assign({}, common, {scales: {y: {beginAtZero: true, ticks: {precision: 0}}}})
      }),
      perDay: new window.Chart(document.getElementById("outcomes-per-day"), {
        type: "bar",
        data: {labels: data.days, datasets: [
          {label: "Single", data: data.outcomes_per_day.single, backgroundColor: "#1b7f3b"},
          {label: "Multiple", data: data.outcomes_per_day.multiple, backgroundColor: "#0b5cad"},
          {label: "None", data: data.outcomes_per_day.none, backgroundColor: "#b3261e"},
          {label: "Pending", data: data.outcomes_per_day.pending, backgroundColor: "#8a5a00"}
        ]},
        options: Object.assign({}, common, {scales: {x: {stacked: true},
                                                     y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}}})
      })
    };
  }

  function showCounts(counts) {
    Object.keys(counts).forEach(function (name) {
      var el = document.querySelector("[data-count=" + name + "]");
      if (el) { el.textContent = String(counts[name]); }
    });
  }

  function loadStatus() {
    var summary = document.getElementById("crm-summary");
    var list = document.getElementById("crm-lines");
    fetch(ROOT + "/admin/status.json", {credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) { throw new Error("the connector answered " + response.status); }
        return response.json();
      })
      .then(function (status) {
        summary.textContent = status.crm.ok ? "The CRM answers; every object and field the connector writes is accessible."
                                            : "The CRM has problems: see below.";
        summary.className = status.crm.ok ? "ok" : "error";
        list.textContent = "";
        status.crm.lines.forEach(function (line) {
          var item = document.createElement("li");
          item.className = line.ok ? "check-ok" : "check-bad";
          item.textContent = line.what + (line.detail ? ": " + line.detail : "");
          list.appendChild(item);
        });
        showCounts(status.outbox);
      })
      .catch(function (err) {
        summary.textContent = "Could not check the CRM: " + err.message;
        summary.className = "error";
      });
  }

  function refreshCounts() {
    fetch(ROOT + "/api/admin/outbox", {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (counts) { if (counts) { showCounts(counts); } })
      .catch(function () { /* the next refresh tries again */ });
  }

  try { drawCharts(); } catch (e) { document.getElementById("chart-error").hidden = false; }
  loadStatus();
  window.setInterval(refreshCounts, 10000);
})();
