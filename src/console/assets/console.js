// cgbot console: keyboard review and bulk selection on the queue, shortcuts on a case.
(function () {
  "use strict";
  const typing = (e) => /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName);

  const queue = document.getElementById("queue");
  if (queue) {
    const rows = Array.from(queue.querySelectorAll("tr.case-row"));
    const count = document.getElementById("selected-count");
    const picks = () => rows.map((r) => r.querySelector("input.pick"));
    const update = () => { count.textContent = picks().filter((p) => p.checked).length; };
    let cursor = rows.length ? 0 : -1;
    const show = () => rows.forEach((r, i) => r.classList.toggle("cursor", i === cursor));
    show();
    queue.addEventListener("change", update);
    document.getElementById("check-all").addEventListener("change", (e) => {
      picks().forEach((p) => { p.checked = e.target.checked; });
      update();
    });
    rows.forEach((row, i) => row.addEventListener("click", (e) => {
      if (e.target.tagName === "INPUT" || e.target.tagName === "A") return;
      cursor = i; show();
    }));
    // c / r act on the checked cases, or on the one under the cursor.
    const act = (button) => {
      if (!picks().some((p) => p.checked) && cursor >= 0) rows[cursor].querySelector("input.pick").checked = true;
      document.getElementById(button).click();
    };
    document.addEventListener("keydown", (e) => {
      if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "j" && cursor < rows.length - 1) { cursor++; show(); rows[cursor].scrollIntoView({ block: "nearest" }); }
      else if (e.key === "k" && cursor > 0) { cursor--; show(); rows[cursor].scrollIntoView({ block: "nearest" }); }
      else if (e.key === "x" && cursor >= 0) { const p = rows[cursor].querySelector("input.pick"); p.checked = !p.checked; update(); }
      else if (e.key === "Enter" && cursor >= 0) { window.location = rows[cursor].dataset.href; }
      else if (e.key === "c" && rows.length) { act("bulk-confirm"); }
      else if (e.key === "r" && rows.length) { act("bulk-reject"); }
      else return;
      e.preventDefault();
    });
  }

  const verdict = document.getElementById("verdict-form");
  if (verdict) {
    document.addEventListener("keydown", (e) => {
      if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "c") document.getElementById("confirm").click();
      else if (e.key === "r") document.getElementById("reject").click();
      else return;
      e.preventDefault();
    });
  }

  // A camera with no picture yet: say so instead of showing a broken image.
  document.querySelectorAll("img.thumb[data-missing]").forEach((img) => {
    const missing = () => {
      const note = document.createElement("span");
      note.className = "thumb no-picture";
      note.textContent = img.dataset.missing;
      img.replaceWith(note);
    };
    if (img.complete && img.naturalWidth === 0) missing();
    else img.addEventListener("error", missing);
  });
})();
