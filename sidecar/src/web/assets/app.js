// Pickline pages: live updates by server-sent events. The server names the events
// (data-events) and the page's live region (data-live); on a change the region is fetched
// again and swapped in, unless staff are typing in it (then after they leave the field).
(function () {
  "use strict";
  var body = document.body;
  document.addEventListener("click", function (e) {
    if (e.target && e.target.hasAttribute && e.target.hasAttribute("data-print")) { window.print(); }
  });
  var events = body.getAttribute("data-events");
  var liveUrl = body.getAttribute("data-live");
  if (!events || !liveUrl || !window.EventSource) { return; }
  var order = body.getAttribute("data-order");
  var conn = document.getElementById("conn");
  var pending = false;
  var busy = false;

  function typing() {
    var live = document.getElementById("live");
    var el = document.activeElement;
    return !!(live && el && live.contains(el) && el.value && (el.tagName === "INPUT" || el.tagName === "SELECT"));
  }

  function refresh() {
    if (busy) { pending = true; return; }
    if (typing()) { pending = true; return; }
    busy = true; pending = false;
    fetch(liveUrl, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { throw new Error("status " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var live = document.getElementById("live");
        var focusId = document.activeElement && document.activeElement.id;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("live");
        if (live && next) {
          live.replaceWith(next);
          if (focusId) { var f = document.getElementById(focusId); if (f) { f.focus(); } }
        }
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { if (conn) { conn.textContent = "Could not update; reload the page."; } })
      .then(function () { busy = false; if (pending) { refresh(); } });
  }

  document.addEventListener("focusout", function () { if (pending) { setTimeout(refresh, 0); } });

  var source = new EventSource(events);
  source.addEventListener("order", function (e) {
    if (order && String(e.data).split(" ")[0] !== order) { return; }
    refresh();
  });
  source.addEventListener("resync", refresh);
  source.onopen = function () {
    body.setAttribute("data-connected", "1");
    if (conn) { conn.textContent = "Updates by itself."; }
  };
  source.onerror = function () {
    body.removeAttribute("data-connected");
    if (conn) { conn.textContent = "Reconnecting…"; }
  };
})();
