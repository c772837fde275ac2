// Keyboard shortcuts for the labelling form: each input or button with data-key answers to that key.
// Choosing both answers from the keyboard saves at once; Enter saves; u and s are unsure and skip;
// Backspace takes back the last answer (its image comes back).
"use strict";
(function () {
  const form = document.getElementById("answer");
  const undo = document.getElementById("undo");
  const save = form ? form.querySelector("button[value=label]") : null;
  const complete = () =>
    form.querySelector("input[name=banner]:checked") && form.querySelector("input[name=position]:checked");
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) {
      return;
    }
    if (event.key === "Backspace" && undo) {
      event.preventDefault();
      undo.requestSubmit();
      return;
    }
    if (!form) {
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
