// smm-gateway admin: plain JS, no build step. Two small things:
// - forms with data-confirm ask before they post (resolve, rotate, disable, confirm);
// - the Overview's tiles refresh from /admin/api/overview every 15 s (the session
//   cookie authenticates the GET; nothing is posted from here).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  if (document.body.dataset.page === "overview") {
    setInterval(refresh, 15000);
  }
});

function pick(data, path) {
  return path.split(".").reduce((v, k) => (v == null ? v : v[k]), data);
}

async function refresh() {
  try {
    const answer = await fetch("/admin/api/overview", { credentials: "same-origin" });
    if (!answer.ok) return;
    const data = await answer.json();
    for (const el of document.querySelectorAll("[data-k]")) {
      let value = pick(data, el.dataset.k);
      if (value == null) continue;
      if (el.classList.contains("pct")) value = (value * 100).toFixed(1);
      el.textContent = value;
    }
  } catch (err) {
    // the next tick tries again
  }
}
