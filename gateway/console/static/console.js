// The console's only script: copy buttons, confirmations, the price-file picker, the playground's two modes.
// Pages work without it (plain forms); nothing here talks to the network.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (e) {  // no clipboard permission (plain http): select it for Ctrl+C instead
        const range = document.createRange();
        range.selectNodeContents(document.getElementById(button.dataset.copy));
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
      }
      button.textContent = "Copied";
    });
  }
  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  const file = document.getElementById("import-file");
  if (file) {
    file.addEventListener("change", async () => {
      if (file.files.length) document.getElementById("import-text").value = await file.files[0].text();
    });
  }
  const form = document.getElementById("playground-form");
  if (form) {
    const show = () => {
      const paste = form.querySelector("input[name=mode]:checked").value === "paste";
      form.querySelector(".describe").hidden = paste;
      form.querySelector(".paste").hidden = !paste;
    };
    for (const radio of form.querySelectorAll("input[name=mode]")) radio.addEventListener("change", show);
    show();
  }
});
