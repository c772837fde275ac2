// Keyboard shortcuts for the labelling form: each input or button with data-key answers to that key.
// Choosing both answers from the keyboard saves at once; Enter saves; u and s are unsure and skip.
"use strict";
(function () {
  const form = document.getElementById("answer");
  if (!form) {
    return;
  }
  const save = form.querySelector("button[value=label]");
  const complete = () =>
    form.querySelector("input[name=banner]:checked") && form.querySelector("input[name=position]:checked");
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) {
      return;
    }
    if (event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit(save);
      return;
    }
    const target = form.querySelector('[data-key="' + CSS.escape(event.key.toLowerCase()) + '"]');
    if (!target) {
      return;
    }
    event.preventDefault();
    if (target.type === "radio") {
      target.checked = true;
      if (complete()) {
        form.requestSubmit(save);
      }
    } else {
      target.click();
    }
  });
})();
