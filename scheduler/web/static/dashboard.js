// latentfarm dashboard: refreshes live numbers from the JSON API (/api/v1). Vanilla JS, no dependencies.
// Pages are complete without it; it only updates statuses, counts and progress bars in place.
(function () {
  "use strict";

  var PERIOD_MS = 2000;
  var ACTIVE = ["pending", "queued", "running"];
  var STATUSES = ["pending", "queued", "running", "succeeded", "failed", "cancelled"];

  function isActive(status) { return ACTIVE.indexOf(status) >= 0; }

  // Fetch url as JSON every PERIOD_MS and hand it to apply; apply returns false to stop. Skips while hidden.
  function poll(url, apply) {
    function tick() {
      if (document.hidden) { setTimeout(tick, PERIOD_MS); return; }
      fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data === null || apply(data) !== false) { setTimeout(tick, PERIOD_MS); }
        })
        .catch(function () { setTimeout(tick, PERIOD_MS * 2); });
    }
    setTimeout(tick, PERIOD_MS);
  }

  function setStatus(root, status) {
    var badge = root.querySelector(".status");
    if (badge && badge.textContent !== status) {
      badge.textContent = status;
      badge.className = "status status-" + status;
    }
    root.setAttribute("data-status", status);
  }

  function setProgress(root, fraction) {
    var bar = root.querySelector("progress.progress");
    var pct = root.querySelector(".pct");
    var text = Math.round(fraction * 100) + "%";
    if (bar) { bar.value = fraction; bar.textContent = text; }
    if (pct) { pct.textContent = text; }
  }

  function setCounts(root, counts, total) {
    STATUSES.forEach(function (s) {
      var cell = root.querySelector("[data-count='" + s + "']");
      if (cell) { cell.textContent = String(counts[s] || 0); }
    });
    var t = root.querySelector(".total");
    if (t && total !== undefined) { t.textContent = String(total); }
  }

  function applyBatch(root, item) {
    setStatus(root, item.status);
    setCounts(root, item.counts || {}, item.total);
    setProgress(root, item.progress);
  }

  // "/": every batch row of this page; a note when batches were added since the page was drawn.
  function batchesPage(table) {
    var shownTotal = Number(table.getAttribute("data-total"));
    poll(table.getAttribute("data-poll"), function (page) {
      (page.items || []).forEach(function (item) {
        var row = table.querySelector("tr[data-batch-id='" + item.id + "']");
        if (row) { applyBatch(row, item); }
      });
      var note = document.getElementById("new-batches");
      if (note && page.total > shownTotal) { note.hidden = false; }
      return true;
    });
  }

  // "/batches/{id}": the summary, and the job rows while anything runs; reload once the batch settles.
  function batchPage(summary) {
    var wasActive = summary.getAttribute("data-status") === "running";
    var jobs = document.getElementById("jobs");
    poll(summary.getAttribute("data-poll"), function (item) {
      applyBatch(summary, item);
      if (wasActive && item.status !== "running") { window.location.reload(); return false; }
      return true;
    });
    if (jobs && wasActive) {
      poll(jobs.getAttribute("data-poll"), function (page) {
        var anyActive = false;
        (page.items || []).forEach(function (job) {
          var row = jobs.querySelector("tr[data-job-id='" + job.id + "']");
          if (!row) { return; }
          setStatus(row, job.status);
          setProgress(row, job.progress);
          var attempts = row.querySelector(".attempts");
          if (attempts) { attempts.textContent = job.attempts + "/" + job.max_attempts; }
          var worker = row.querySelector(".worker");
          if (worker && job.worker) { worker.textContent = job.worker; }
          anyActive = anyActive || isActive(job.status);
        });
        return anyActive;
      });
    }
  }

  // "/jobs/{id}": status and progress while it waits or runs; reload once it has finished.
  function jobPage(section) {
    if (!isActive(section.getAttribute("data-status"))) { return; }
    poll(section.getAttribute("data-poll"), function (job) {
      setStatus(section, job.status);
      setProgress(section, job.progress);
      if (!isActive(job.status)) { window.location.reload(); return false; }
      return true;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var batches = document.getElementById("batches");
    var summary = document.querySelector("section#summary[data-batch-id]");
    var job = document.querySelector("section#job[data-job-id]");
    if (batches) { batchesPage(batches); }
    if (summary) { batchPage(summary); }
    if (job) { jobPage(job); }
  });
})();
