// Flotilla's dashboard: the experiment page follows its event stream and
// swaps in what changed; list pages reload every few seconds.
(function () {
  var live = document.querySelector("[data-events]");
  if (live) {
    var source = new EventSource(live.getAttribute("data-events"));
    source.onmessage = function (message) {
      var update = JSON.parse(message.data);
      Object.keys(update.fields).forEach(function (id) {
        var element = document.getElementById(id);
        if (element) { element.textContent = update.fields[id]; }
      });
      document.getElementById("variations").innerHTML = update.variations;
      document.getElementById("failures").innerHTML = update.failures;
      document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || 0) + 1));
      if (update.final) { source.close(); setTimeout(function () { location.reload(); }, 500); }
    };
  }
  var refresh = document.querySelector("[data-refresh]");
  if (refresh) {
    setTimeout(function () { location.reload(); }, 1000 * Number(refresh.getAttribute("data-refresh")));
  }
})();
