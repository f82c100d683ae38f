// The console's script: copy buttons, and live lists fed by server-sent events. Pages work
// without it; it only adds conveniences.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});

// Connections: the catalog's search box filters the tiles as one types (the form still
// searches on the server without JavaScript).
document.addEventListener("input", (event) => {
  const box = event.target.closest("[data-filter]");
  if (!box) return;
  const list = document.getElementById(box.getAttribute("data-filter"));
  if (!list) return;
  const query = box.value.trim().toLowerCase();
  let shown = 0;
  for (const tile of list.querySelectorAll("[data-terms]")) {
    const match = !query || tile.getAttribute("data-terms").includes(query);
    tile.hidden = !match;
    if (match) shown += 1;
  }
  const empty = document.getElementById(list.id.replace("-tiles", "-empty"));
  if (empty) empty.hidden = shown > 0;
});
