// Keyboard review: the first image of the queue takes the keys. y / n banner, the position keys, and once
// both are chosen the decision is sent; Enter decides, Delete discards.
"use strict";
(function () {
  const current = document.getElementById("current");
  if (!current) {
    return;
  }
  const form = current.querySelector("form");
  const decide = form.querySelector("button[value=decide]");
  const discard = form.querySelector("button[value=discard]");
  const complete = () =>
    form.querySelector("input[name=banner]:checked") && form.querySelector("input[name=position]:checked");
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) {
      return;
    }
    if (event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit(decide);
      return;
    }
    if (event.key === "Delete") {
      event.preventDefault();
      form.requestSubmit(discard);
      return;
    }
    const target = form.querySelector('input[data-key="' + CSS.escape(event.key.toLowerCase()) + '"]');
    if (!target) {
      return;
    }
    event.preventDefault();
    target.checked = true;
    if (complete()) {
      form.requestSubmit(decide);
    }
  });
})();
