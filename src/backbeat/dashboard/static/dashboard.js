// backbeat dashboard: live counts, figures, progress bars and charts from /events.
// One EventSource at most, closed while the tab is hidden; no other requests. A running
// task's page follows its task: when the task leaves running, the page is loaded again,
// once, to show how it ended (that page is not live). The pages work without this file:
// it only keeps them current and drives "select all".
(function () {
  "use strict";
  var url = document.body.getAttribute("data-events");
  var live = document.querySelector(
    "[data-count], [data-progress], [data-chart], [data-fact], [data-follow]"
  );
  var follow = document.querySelector("[data-follow]");
  var stream = null;
  var ended = false; // the followed task left running: no stream any more

  if (url && follow) url += "?task=" + encodeURIComponent(follow.getAttribute("data-follow"));

  function each(selector, apply) {
    var nodes = document.querySelectorAll(selector);
    for (var i = 0; i < nodes.length; i++) apply(nodes[i]);
  }

  function attr(name, value) {
    return "[" + name + '="' + CSS.escape(String(value)) + '"]';
  }

  function setText(selector, value) {
    each(selector, function (node) { node.textContent = value; });
  }

  function showProgress(task) {
    each(attr("data-progress", task.id), function (bar) {
      if (task.fraction === null) bar.removeAttribute("value");
      else bar.value = task.fraction;
    });
    setText(attr("data-progress-message", task.id), task.message);
  }

  function update(data) {
    var state, queue, name, i;
    for (state in data.counts) setText(attr("data-count", state), data.counts[state]);
    for (queue in data.queues) {
      for (state in data.queues[queue]) {
        setText(attr("data-queue-count", queue + "/" + state), data.queues[queue][state]);
      }
    }
    for (name in data.facts) setText(attr("data-fact", name), data.facts[name]);
    for (i = 0; i < data.running.length; i++) showProgress(data.running[i]);
    for (name in data.charts) {
      each(attr("data-chart", name), function (line) {
        line.setAttribute("points", data.charts[name].points);
      });
      setText(attr("data-chart-top", name), data.charts[name].top);
    }
    document.body.classList.toggle("stale", Boolean(data.error));
    if (data.task) {
      showProgress(data.task);
      if (data.task.state !== "running") {
        ended = true;
        close();
        window.location.reload();
      }
    }
  }

  function open() {
    if (stream !== null || ended || !url || !live) return;
    stream = new EventSource(url);
    stream.onmessage = function (event) { update(JSON.parse(event.data)); };
  }

  function close() {
    if (stream === null) return;
    stream.close();
    stream = null;
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) close();
    else open();
  });
  if (!document.hidden) open();

  each("[data-select-all]", function (box) {
    box.addEventListener("change", function () {
      each('input[name="id"][form="selection"]', function (row) { row.checked = box.checked; });
    });
  });
})();
