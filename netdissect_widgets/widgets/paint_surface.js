// The PaintCanvas drawing surface (an anywidget ES module).
//
// Shows `image` (PNG bytes) with `overlay` (PNG bytes, RGBA) on top, and draws the
// stroke under the mouse locally, as it moves, with a round brush of `brush` canvas px
// in `colour`. Only when the stroke ends (mouse up, or the mouse leaving the surface)
// does one message go to the kernel: {event: "stroke", points: [[x, y], ...]} in
// canvas px. The live stroke stays visible until the kernel sends the next overlay.

function pngUrl(bytes) {
  if (!bytes || bytes.byteLength === 0) return null;
  return URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
}

function render({ model, el }) {
  const canvas = document.createElement("canvas");
  canvas.className = "ndw-paint-surface";
  canvas.style.cursor = "crosshair";
  canvas.style.touchAction = "none";
  canvas.style.display = "block";
  el.style.display = "inline-block";
  el.style.lineHeight = "0";
  el.appendChild(canvas);
  const ctx = canvas.getContext("2d");
  const layers = { image: null, overlay: null };
  let points = null;

  function size() {
    canvas.width = model.get("width");
    canvas.height = model.get("height");
    canvas.style.width = `${canvas.width}px`;
    canvas.style.height = `${canvas.height}px`;
  }

  function redraw() {
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (const name of ["image", "overlay"]) {
      if (layers[name]) ctx.drawImage(layers[name], 0, 0, canvas.width, canvas.height);
    }
    if (points) drawStroke(points);
  }

  function load(name) {
    const url = pngUrl(model.get(name));
    if (!url) {
      layers[name] = null;
      redraw();
      return;
    }
    const img = new Image();
    img.onload = () => {
      layers[name] = img;
      if (name === "overlay") points = null; // the kernel has answered this stroke
      redraw();
      URL.revokeObjectURL(url);
    };
    img.src = url;
  }

  function drawStroke(pts) {
    ctx.save();
    ctx.strokeStyle = ctx.fillStyle = model.get("colour");
    ctx.lineWidth = 2 * model.get("brush");
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.arc(pts[0][0], pts[0][1], model.get("brush"), 0, 2 * Math.PI);
    ctx.fill();
    ctx.beginPath();
    ctx.moveTo(pts[0][0], pts[0][1]);
    for (const [x, y] of pts.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
    ctx.restore();
  }

  function at(event) {
    const rect = canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * canvas.width) / rect.width,
      ((event.clientY - rect.top) * canvas.height) / rect.height,
    ];
  }

  let drawing = false;
  function end() {
    if (!drawing) return;
    drawing = false;
    model.send({ event: "stroke", points: points.map(([x, y]) => [Math.round(x * 10) / 10, Math.round(y * 10) / 10]) });
  }
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    drawing = true;
    points = [at(e)];
    redraw();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const p = at(e);
    const last = points[points.length - 1];
    if (Math.abs(p[0] - last[0]) + Math.abs(p[1] - last[1]) < 1) return;
    points.push(p);
    redraw(); // drawn here, in the browser: nothing is sent while the mouse moves
  });
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointerleave", end);

  size();
  load("image");
  load("overlay");
  model.on("change:width", () => { size(); redraw(); });
  model.on("change:height", () => { size(); redraw(); });
  model.on("change:image", () => load("image"));
  model.on("change:overlay", () => load("overlay"));
  model.on("msg:custom", (msg) => {
    if (msg && msg.event === "clear") {
      points = null;
      redraw();
    }
  });
}

export default { render };
