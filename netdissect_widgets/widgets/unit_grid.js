// The unit selector of the ablation panel: one button per unit, grouped, one synced list of ablated units.
// Model traits: units = [{unit, group, tip}], ablated = [unit, ...] (sorted). A click toggles one unit.
function render({ model, el }) {
  el.classList.add("ndw-unit-selector");
  const cells = new Map();
  const heads = new Map();

  function build() {
    el.replaceChildren();
    cells.clear();
    heads.clear();
    const groups = new Map();
    for (const u of model.get("units")) {
      if (!groups.has(u.group)) groups.set(u.group, []);
      groups.get(u.group).push(u);
    }
    for (const [name, members] of groups) {
      const box = document.createElement("div");
      box.className = "ndw-grid-group";
      const head = document.createElement("div");
      head.className = "ndw-grid-head";
      box.appendChild(head);
      heads.set(name, { head, members });
      const row = document.createElement("div");
      row.className = "ndw-grid-cells";
      for (const u of members) {
        const b = document.createElement("button");
        b.className = "ndw-unit-cell";
        b.textContent = String(u.unit);
        b.dataset.unit = String(u.unit);
        b.dataset.tip = u.tip;
        row.appendChild(b);
        cells.set(u.unit, b);
      }
      box.appendChild(row);
      el.appendChild(box);
    }
    paint();
  }

  function paint() {
    const on = new Set(model.get("ablated"));
    for (const [unit, b] of cells) {
      const off = on.has(unit);
      b.classList.toggle("ndw-on", off);
      b.setAttribute("aria-pressed", String(off));
      b.title = b.dataset.tip + (off ? " - ABLATED (click to restore)" : " - click to ablate");
    }
    for (const [name, { head, members }] of heads) {
      const n = members.filter((u) => on.has(u.unit)).length;
      head.textContent = `${name}: ${n}/${members.length} ablated`;
      head.classList.toggle("ndw-some-on", n > 0);
    }
  }

  el.addEventListener("click", (event) => {
    const b = event.target.closest(".ndw-unit-cell");
    if (!b) return;
    const unit = Number(b.dataset.unit);
    const now = new Set(model.get("ablated"));
    if (now.has(unit)) now.delete(unit);
    else now.add(unit);
    model.set("ablated", [...now].sort((a, b) => a - b));
    model.save_changes();
    paint();
  });
  model.on("change:ablated", paint);
  model.on("change:units", build);
  build();
}

export default { render };
