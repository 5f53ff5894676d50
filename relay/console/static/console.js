// chatrelay console: keeps the overview live (server-sent events) and helps
// with selections on the dead-letter list. Everything works without it.
(function () {
  "use strict";

  function clock(d) {
    return d.toISOString().slice(11, 19) + " UTC";
  }

  function live() {
    var box = document.getElementById("live");
    var status = document.getElementById("live-status");
    if (!box || !window.EventSource) return;
    var es = new EventSource(box.getAttribute("data-live"));
    es.addEventListener("open", function () {
      status.setAttribute("data-state", "live");
      status.textContent = "Live";
    });
    es.addEventListener("overview", function (e) {
      // Server-rendered by html/template: escaped like the page itself.
      box.innerHTML = e.data;
      status.setAttribute("data-state", "live");
      status.textContent = "Live · updated " + clock(new Date());
    });
    es.addEventListener("expired", function () {
      es.close();
      window.location.assign("/login?next=%2F");
    });
    es.addEventListener("error", function () {
      status.setAttribute("data-state", "offline");
      status.textContent = "Reconnecting…";
    });
  }

  function selection() {
    var all = document.getElementById("select-all");
    var form = document.querySelector("form.dead");
    if (!form) return;
    var boxes = function () { return form.querySelectorAll('input[name="id"]'); };
    var update = function () {
      var n = 0;
      boxes().forEach(function (b) { if (b.checked) n++; });
      form.querySelectorAll("[data-needs-selection]").forEach(function (btn) {
        btn.disabled = n === 0;
        var verb = btn.value.indexOf("replay") === 0 ? "Replay" : "Purge";
        btn.textContent = n ? verb + " " + n + " selected" : verb + " selected";
      });
    };
    if (all) {
      all.addEventListener("change", function () {
        boxes().forEach(function (b) { b.checked = all.checked; });
        update();
      });
    }
    form.addEventListener("change", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    live();
    selection();
  });
})();
