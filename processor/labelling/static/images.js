// The images page: one box ticks (or clears) every image shown.
"use strict";
(function () {
  const all = document.getElementById("all");
  if (!all) {
    return;
  }
  all.addEventListener("change", () => {
    document.querySelectorAll("#bulk input[name=image_id]").forEach((box) => {
      box.checked = all.checked;
    });
  });
})();
