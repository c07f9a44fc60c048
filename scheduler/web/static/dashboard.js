// latentfarm dashboard: refreshes live numbers from the JSON API (/api/v1) and sends the cancel and retry buttons
// to it. Vanilla JS, no dependencies. Pages are complete without it but for those buttons; it only updates
// statuses, counts and progress bars in place.
(function () {
  "use strict";

  var PERIOD_MS = 2000;
  var ACTIVE = ["pending", "queued", "running"];
  var STATUSES = ["pending", "queued", "running", "succeeded", "failed", "cancelled", "pruned"];

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

  // The cancel and retry buttons: a POST to the API with no body, from this page (the browser says so in
  // Sec-Fetch-Site and Origin) with the session cookie, as the server's guard asks of a write signed in by it.
  function say(text, failed) {
    var out = document.getElementById("action-result");
    if (!out) { return; }
    out.textContent = text;
    out.className = failed ? "note error" : "note";
  }

  function describe(action, answer) {
    if (action === "retry") {
      return (answer.queued || []).length ? "job " + answer.job + " queued again"
        : "job " + answer.job + " will run again once the jobs it needs have";
    }
    var n = (answer.cancelled || []).length;
    var flagged = (answer.flagged || []).length;
    var said = [];
    if (n) { said.push("cancelled " + n + " job" + (n === 1 ? "" : "s")); }
    if (flagged) { said.push(flagged + " running job" + (flagged === 1 ? "" : "s") + " asked to stop"); }
    return said.length ? said.join("; ") : "nothing to cancel: the jobs had finished";
  }

  function refreshRow(row, id) {
    fetch("/api/v1/jobs/" + id, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) { if (job) { setStatus(row, job.status); setProgress(row, job.progress); } })
      .catch(function () {});
  }

  function act(button) {
    var action = button.getAttribute("data-action");
    var job = button.getAttribute("data-job-id");
    var url = action === "cancel-batch"
      ? "/api/v1/batches/" + button.getAttribute("data-batch-id") + "/cancel"
      : "/api/v1/jobs/" + job + "/" + action;
    if (action === "cancel-batch" && !window.confirm("Cancel every job of this batch that has not finished?")) {
      return;
    }
    button.disabled = true;
    fetch(url, { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return [r.ok, r.status, body]; });
      })
      .then(function (result) {
        var ok = result[0], body = result[2];
        if (!ok) {
          say(action + " refused (" + result[1] + "): " + (body.detail || "no reason given"), true);
          button.disabled = false;
          return;
        }
        say(describe(action === "cancel-batch" ? "cancel" : action, body), false);
        button.hidden = true;
        if (action === "cancel-batch") { window.location.reload(); return; }
        var row = button.closest("tr[data-job-id]");
        if (row) { refreshRow(row, job); }
      })
      .catch(function () { say(action + " failed: the server did not answer", true); button.disabled = false; });
  }

  function actions() {
    var buttons = document.querySelectorAll("button.action[data-action]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].addEventListener("click", function (e) { act(e.currentTarget); });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    actions();
    var batches = document.getElementById("batches");
    var summary = document.querySelector("section#summary[data-batch-id]");
    var job = document.querySelector("section#job[data-job-id]");
    if (batches) { batchesPage(batches); }
    if (summary) { batchPage(summary); }
    if (job) { jobPage(job); }
  });
})();
