// Refresh the parts of a page marked data-refresh="URL" every 5 s, without reloading it.
(function () {
  function refresh() {
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { el.innerHTML = html; } })
        .catch(function () {});
    });
  }
  setInterval(refresh, 5000);
})();
