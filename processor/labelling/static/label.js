// Keyboard shortcuts for the labelling form: each input or button with data-key answers to that key.
// Choosing both answers from the keyboard saves at once; Enter saves; u and s are unsure and skip; a accepts
// the model's suggestion; Backspace takes back the last answer (its image comes back); f (or a click on the
// photo) shows it at full size; l opens the listing's other photos. The next image is fetched ahead.
"use strict";
(function () {
  const form = document.getElementById("answer");
  const undo = document.getElementById("undo");
  const photo = document.getElementById("photo");
  const listing = document.getElementById("listing");
  const save = form ? form.querySelector("button[value=label]") : null;
  const complete = () =>
    form.querySelector("input[name=banner]:checked") && form.querySelector("input[name=position]:checked");

  const zoom = () => {
    const img = photo.querySelector("img");
    const zoomed = photo.classList.toggle("zoomed");
    if (zoomed && !img.dataset.display) {
      img.dataset.display = img.src;
      img.src = photo.dataset.full;
    }
  };
  const showListing = () => {
    listing.open = !listing.open;
  };
  if (photo) {
    photo.querySelector("#zoom").addEventListener("click", (event) => {
      event.preventDefault();
      zoom();
    });
    const next = photo.dataset.next;
    const img = photo.querySelector("img");
    const prefetch = () => {
      if (next) {
        new Image().src = next; // the browser keeps it (Cache-Control: private) for the next page
      }
    };
    if (img.complete) {
      prefetch();
    } else {
      img.addEventListener("load", prefetch, { once: true });
    }
  }
  if (listing) {
    listing.addEventListener("toggle", () => {
      listing.querySelectorAll("img[data-src]").forEach((img) => {
        img.src = img.dataset.src;
        img.removeAttribute("data-src");
      });
    });
  }

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
    const key = event.key.toLowerCase();
    if (key === "f" && photo) {
      event.preventDefault();
      zoom();
      return;
    }
    if (key === "l" && listing) {
      event.preventDefault();
      showListing();
      return;
    }
    const target = form.querySelector('[data-key="' + CSS.escape(key) + '"]');
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
