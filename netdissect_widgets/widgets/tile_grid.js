// The unit browser's page of tiles: one model, one message per page.
// Model traits: tiles = [{unit, title (HTML made safe by the kernel), png (bytes)}], thumb_width (px).
// A click anywhere on a tile sends {event: "open", unit} to the kernel.
function render({ model, el }) {
  el.classList.add("ndw-unit-grid");
  let urls = [];

  function draw() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    const width = model.get("thumb_width");
    const frag = document.createDocumentFragment();
    for (const tile of model.get("tiles")) {
      const box = document.createElement("div");
      box.className = "ndw-unit-tile";
      box.style.width = `${width + 10}px`;
      const title = document.createElement("div");
      title.className = "ndw-unit-title";
      title.innerHTML = tile.title;
      const img = document.createElement("img");
      img.className = "ndw-unit-images";
      img.style.width = `${width}px`;
      const url = URL.createObjectURL(new Blob([tile.png], { type: "image/png" }));
      urls.push(url);
      img.src = url;
      img.alt = `top images of unit ${tile.unit}`;
      const open = document.createElement("button");
      open.className = "ndw-unit-open";
      open.textContent = `unit ${tile.unit} details`;
      open.title = `open the detail view of unit ${tile.unit}`;
      open.dataset.unit = String(tile.unit);
      box.append(title, img, open);
      frag.appendChild(box);
    }
    el.replaceChildren(frag);
  }

  el.addEventListener("click", (event) => {
    const tile = event.target.closest(".ndw-unit-tile");
    if (!tile) return;
    const unit = Number(tile.querySelector(".ndw-unit-open").dataset.unit);
    model.send({ event: "open", unit });
  });
  model.on("change:tiles", draw);
  model.on("change:thumb_width", draw);
  draw();
  return () => { for (const url of urls) URL.revokeObjectURL(url); };
}

export default { render };
