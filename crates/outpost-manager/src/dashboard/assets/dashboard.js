// Live refresh for the dashboard: every few seconds, fetch the page again
// and swap in the fresh copy of each element marked data-refresh (the
// fleet table, the readiness matrix). Pages work without this script.
(function () {
  "use strict";
  // data-refresh="N" asks for N seconds (big pages); default 5, never less.
  var live = document.querySelector("[data-refresh]");
  if (!live) {
    return;
  }
  var seconds = parseInt(live.getAttribute("data-refresh"), 10);
  var INTERVAL_MS = (isNaN(seconds) || seconds < 5 ? 5 : seconds) * 1000;
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", redirect: "manual" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        document.querySelectorAll("[data-refresh]").forEach(function (old) {
          var replacement = fresh.getElementById(old.id);
          if (replacement) {
            old.replaceWith(document.importNode(replacement, true));
          }
        });
        var stamp = document.getElementById("refreshed");
        if (stamp) {
          stamp.textContent = "refreshed " + new Date().toLocaleTimeString();
        }
      })
      .catch(function () {
        var stamp = document.getElementById("refreshed");
        if (stamp) {
          stamp.textContent = "refresh failed; retrying";
        }
      });
  }
  window.setInterval(refresh, INTERVAL_MS);
})();
