// The developer portal's only script: focus on the page's heading, copy
// buttons, the playground's path following the chosen service, and a
// secret shown once forgotten when its page is left. Every page works
// without it.
"use strict";

// A new page starts at its heading (or at the alert of a form that was
// refused), not at the top of the document: a screen reader reads it
// first, and Tab goes on from there.
const start = document.querySelector("main [role=alert]") ?? document.getElementById("title");
if (start && document.activeElement === document.body) {
  if (!start.hasAttribute("tabindex")) start.setAttribute("tabindex", "-1");
  start.focus();
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.value !== undefined ? source.value : source.textContent;
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch (_) {
    if (source.select) {
      source.select();
      copied = document.execCommand("copy");
    }
  }
  const status = button.closest(".field, .snippet")?.querySelector(".copied");
  const message = copied ? "Copied." : "Select the text and copy it.";
  if (status) status.textContent = message;
  button.textContent = copied ? "Copied" : "Copy";
});

const service = document.querySelector("select#service[name=service] option[data-path]")?.parentElement;
const path = document.getElementById("path");
if (service && path) {
  let touched = false;
  path.addEventListener("input", () => { touched = true; });
  service.addEventListener("change", () => {
    const option = service.selectedOptions[0];
    if (!touched && option && option.dataset.path) path.value = option.dataset.path;
  });
}

// The page that shows a secret once forgets it when it is left: a browser
// may keep the page as it was and show it again on Back (its back/forward
// cache, which Chromium uses even for a page sent with no-store). What it
// keeps is the page emptied here; shown again, it asks the server, which
// says the secret was shown already.
const once = document.querySelector("[data-shown-once]")?.closest("main");
if (once) {
  window.addEventListener("pagehide", () => { once.replaceChildren(); });
  window.addEventListener("pageshow", (event) => { if (event.persisted) location.reload(); });
}
