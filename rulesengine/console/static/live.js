// Refreshes the numbers of a page from its JSON twin: each element with data-live (a JSON list:
// the path in the answer; in a list, the item whose name is the next step) inside an element
// with data-live-source gets the value's text every data-live-seconds. Without it the page
// is complete as served; an answer that fails (a session ended) stops the refreshing.
(function () {
  "use strict";

  function find(value, path) {
    for (const step of path) {
      if (Array.isArray(value)) {
        value = value.find(function (item) { return item && item.name === step; });
      } else if (value !== null && typeof value === "object") {
        value = value[step];
      } else {
        return undefined;
      }
    }
    return value;
  }

  function refresh(source) {
    const url = source.getAttribute("data-live-source");
    const seconds = Number(source.getAttribute("data-live-seconds")) || 5;
    function update() {
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (answer) {
          if (!answer.ok) { throw new Error(url + " answered " + answer.status); }
          return answer.json();
        })
        .then(function (data) {
          source.querySelectorAll("[data-live]").forEach(function (element) {
            const value = find(data, JSON.parse(element.getAttribute("data-live")));
            if (value !== undefined) { element.textContent = value === null ? "" : String(value); }
          });
          source.setAttribute("data-live-updated", String(Date.now()));
          window.setTimeout(update, seconds * 1000);
        })
        .catch(function () { source.setAttribute("data-live-stopped", "true"); });
    }
    window.setTimeout(update, seconds * 1000);
  }

  document.querySelectorAll("[data-live-source]").forEach(refresh);
}());
