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
// Source debugger: follow the call log over server-sent events and put each new call at the
// top of the list (built with textContent: nothing from a payload is parsed as HTML).
(() => {
  const list = document.querySelector("ol[data-stream]");
  if (!list || !window.EventSource) return;
  const status = document.querySelector("[data-live-status]");
  const KEEP = 200;
  let received = 0;
  const source = new EventSource(list.getAttribute("data-stream"));
  const text = (tag, content, className) => {
    const node = document.createElement(tag);
    node.textContent = content;
    if (className) node.className = className;
    return node;
  };
  source.addEventListener("call", (event) => {
    const call = JSON.parse(event.data);
    const item = document.createElement("li");
    item.id = "call-" + call.seq;
    item.append(text("span", call.type, "call-kind"), " · " + call.source + " · ",
      text("time", call.received_at), " · ", text("code", call.message_id));
    const details = document.createElement("details");
    details.append(text("summary", "Payload"), text("pre", call.payload));
    item.append(details);
    list.prepend(item);
    while (list.children.length > KEEP) list.lastElementChild.remove();
    const empty = document.querySelector("[data-empty]");
    if (empty) empty.remove();
    received += 1;
    if (status) status.textContent = received + " new call" + (received === 1 ? "" : "s") + " since the page loaded.";
  });
  // The server skipped calls because this view fell behind: say so where the list starts.
  source.addEventListener("skipped", (event) => {
    list.prepend(text("li", event.data, "notice"));
    if (status) status.textContent = event.data;
  });
  // A refused stream (too many open) or a server gone: EventSource gives up; say so.
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED && status) {
      status.textContent = "Live updates stopped (too many debugger views open, or the server is away). Reload the page to try again.";
    }
  });
  window.addEventListener("pagehide", () => source.close());
})();
// Lists & Segments: the segment builder's live preview count. As the person edits, the form
// is posted (debounced) to the preview endpoint and the count written into the builder's
// aria-live element. Changing a condition's kind re-renders the form with that kind's fields,
// as the "Show its fields" button does without JavaScript.
(() => {
  const form = document.querySelector("form[data-builder]");
  if (!form || !window.fetch) return;
  const out = form.querySelector("[data-preview]");
  const url = form.getAttribute("data-preview-url");
  if (!out || !url) return;
  for (const button of form.querySelectorAll("[data-refresh]")) button.hidden = true;
  const where = (key) => key.replace(/^g(\d+)\.c(\d+)\.(\w+)$/,
    (_, g, c, field) => "group " + (Number(g) + 1) + ", condition " + (Number(c) + 1) + ", " + field.replace("_", " "));
  let timer = null;
  let latest = 0;
  const update = () => {
    const mine = ++latest;
    const body = new URLSearchParams(new FormData(form));
    body.delete("op");
    fetch(url, { method: "POST", body, credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then((response) => response.json().then((data) => ({ ok: response.ok, data })))
      .then(({ ok, data }) => {
        if (mine !== latest) return;
        if (ok) {
          const n = data.evaluated;
          out.textContent = "Preview: " + data.count + " of " + n + " profile" + (n === 1 ? "" : "s") + " would be in this segment now.";
        } else {
          const first = Object.entries(data.errors || {})[0];
          out.textContent = first ? "Not counted: " + where(first[0]) + ": " + first[1] : "Not counted.";
        }
      })
      .catch(() => {});
  };
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(update, 400);
  };
  form.addEventListener("input", schedule);
  form.addEventListener("change", (event) => {
    if (!event.target.matches("[data-kind]")) return schedule();
    const op = document.createElement("input");
    op.type = "hidden";
    op.name = "op";
    op.value = "refresh";
    form.append(op);
    form.submit();
  });
})();
