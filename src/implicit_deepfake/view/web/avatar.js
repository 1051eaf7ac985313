// viewer.html's 4D player (model=gaussian_avatar): reads the avatar the page carries inline and plays
// it. Each frame the Gaussians are posed here (neutral + offsets x the frame's code), sorted by depth
// on the CPU and drawn back to front by a small WebGL2 splatter (gsplat's projection: EWA, +0.3 px^2
// blur, alpha = min(0.99, o exp(-d^2 / 2)), dropped below 1/255). Nothing is fetched.
//
// Why not Spark, which draws the 3D page: Spark packs every splat into its own 16-byte texture
// (float16 centres, 8-bit colour) and sorts in a worker; moving splats means re-encoding and
// re-uploading the whole packed set through setSplat() and waiting a worker round trip for the
// order, every frame, for ~3 MB of bundle we would not otherwise need; its GPU modifiers (dyno)
// cannot read per-splat offset tables. Posing 10-50k splats is ~1 ms of JavaScript, a 16-bit
// counting sort another, and the draw is one instanced call.

const SH_C1 = 0.4886025119029199;

function base64Bytes(text) {
  const binary = atob(text.replace(/\s+/g, ""));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function gunzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).arrayBuffer();
}

// The payload's arrays as Float32Arrays (int16 ones multiplied back by their scale).
function readArrays(buffer, layout) {
  const arrays = {};
  for (const { name, type, offset, length, scale } of layout) {
    if (type === "float32") {
      arrays[name] = new Float32Array(buffer, offset, length);
    } else {
      const raw = new Int16Array(buffer, offset, length);
      const values = new Float32Array(length);
      for (let i = 0; i < length; i++) values[i] = raw[i] * scale;
      arrays[name] = values;
    }
  }
  return arrays;
}

const VERTEX = `#version 300 es
precision highp float;
layout(location = 0) in vec2 corner;
layout(location = 1) in vec3 center;
layout(location = 2) in vec4 color;
layout(location = 3) in vec3 covA;
layout(location = 4) in vec3 covB;
uniform mat3 rotation;
uniform vec3 translation;
uniform vec2 focal;
uniform vec2 size;
out vec4 vColor;
out vec2 vOffset;
const float EXTENT = 3.0;
void main() {
  vec3 cam = rotation * center + translation;
  if (cam.z < 0.01) { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); return; }
  mat3 sigma = mat3(covA.x, covA.y, covA.z, covA.y, covB.x, covB.y, covA.z, covB.y, covB.z);
  mat3 view = rotation * sigma * transpose(rotation);
  vec3 jx = vec3(focal.x / cam.z, 0.0, -focal.x * cam.x / (cam.z * cam.z));
  vec3 jy = vec3(0.0, focal.y / cam.z, -focal.y * cam.y / (cam.z * cam.z));
  float a = dot(jx, view * jx) + 0.3, b = dot(jx, view * jy), c = dot(jy, view * jy) + 0.3;
  float mid = 0.5 * (a + c), radius = length(vec2(0.5 * (a - c), b));
  float major = mid + radius, minor = max(mid - radius, 1e-4);
  vec2 axis = abs(b) < 1e-9 ? (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0)) : normalize(vec2(b, major - a));
  vec2 pixel = vec2(focal.x * cam.x / cam.z, focal.y * cam.y / cam.z) + 0.5 * size;
  pixel += EXTENT * (corner.x * sqrt(major) * axis + corner.y * sqrt(minor) * vec2(-axis.y, axis.x));
  gl_Position = vec4(2.0 * pixel.x / size.x - 1.0, 1.0 - 2.0 * pixel.y / size.y, 0.0, 1.0);
  vColor = color;
  vOffset = EXTENT * corner;
}`;

const FRAGMENT = `#version 300 es
precision highp float;
in vec4 vColor;
in vec2 vOffset;
out vec4 fragColor;
void main() {
  float alpha = min(0.99, vColor.a * exp(-0.5 * dot(vOffset, vOffset)));
  if (alpha < 1.0 / 255.0) discard;
  fragColor = vec4(vColor.rgb * alpha, alpha);
}`;

function program(gl) {
  const shader = (type, source) => {
    const s = gl.createShader(type);
    gl.shaderSource(s, source);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  };
  const p = gl.createProgram();
  gl.attachShader(p, shader(gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(p, shader(gl.FRAGMENT_SHADER, FRAGMENT));
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
  return p;
}

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const normalize = (a) => scale(a, 1 / Math.hypot(...a));
// v rotated by `angle` about the unit axis `k` (Rodrigues).
const rotate = (v, k, angle) => {
  const c = Math.cos(angle), s = Math.sin(angle);
  return add(add(scale(v, c), scale(cross(k, v), s)), scale(k, dot(k, v) * (1 - c)));
};

// A camera orbiting `target`: left-drag orbits about the up axis, right-drag pans, the wheel zooms.
class Orbit {
  constructor(canvas, view, onChange) {
    Object.assign(this, { position: view.position, target: view.look_at, up: normalize(view.up), onChange });
    let last = null;
    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    canvas.addEventListener("pointerdown", (event) => {
      last = [event.clientX, event.clientY, event.button === 2 || event.shiftKey];
      canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener("pointerup", () => (last = null));
    canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const [dx, dy] = [event.clientX - last[0], event.clientY - last[1]];
      if (last[2]) this.pan(dx, dy, canvas.clientHeight);
      else this.orbit(-0.005 * dx, -0.005 * dy);
      last = [event.clientX, event.clientY, last[2]];
      onChange();
    });
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const offset = sub(this.position, this.target);
      this.position = add(this.target, scale(offset, Math.exp(0.001 * event.deltaY)));
      onChange();
    }, { passive: false });
  }
  orbit(yaw, pitch) {
    let offset = rotate(sub(this.position, this.target), this.up, yaw);
    const right = normalize(cross(offset, this.up));
    const pitched = rotate(offset, right, pitch);
    if (Math.abs(dot(normalize(pitched), this.up)) < 0.98) offset = pitched;
    this.position = add(this.target, offset);
  }
  pan(dx, dy, height) {
    const forward = normalize(sub(this.target, this.position));
    const right = normalize(cross(forward, this.up)), down = cross(forward, right);
    const step = Math.hypot(...sub(this.position, this.target)) / height;
    const shift = add(scale(right, -dx * step), scale(down, -dy * step));
    this.position = add(this.position, shift);
    this.target = add(this.target, shift);
  }
  // World-to-camera rotation rows (OpenCV axes: x right, y down, z forward) and translation.
  pose() {
    const forward = normalize(sub(this.target, this.position));
    const right = normalize(cross(forward, this.up)), down = cross(forward, right);
    const rows = [right, down, forward];
    return { rows, translation: rows.map((row) => -dot(row, this.position)) };
  }
}

class Player {
  constructor(meta, arrays, canvas) {
    Object.assign(this, { meta, arrays, canvas, n: meta.count, k: meta.code_dims });
    this.code = new Float32Array(this.k);
    this.posed = { means: new Float32Array(3 * this.n), colors: new Float32Array(3 * this.n),
                   alphas: new Float32Array(this.n) };
    this.instances = new Float32Array(13 * this.n);
    this.order = new Uint32Array(this.n);
    this.depths = new Float32Array(this.n);
    this.counts = new Uint32Array(65536);
    this.keys = new Uint16Array(this.n);
    const gl = canvas.getContext("webgl2", { antialias: false, alpha: false, preserveDrawingBuffer: true });
    if (!gl) throw new Error("this browser has no WebGL2");
    this.gl = gl;
    this.program = program(gl);
    gl.useProgram(this.program);
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    const corners = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, corners);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, 1, 1, -1, 1]), gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
    this.buffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffer);
    gl.bufferData(gl.ARRAY_BUFFER, this.instances.byteLength, gl.DYNAMIC_DRAW);
    [[1, 3, 0], [2, 4, 3], [3, 3, 7], [4, 3, 10]].forEach(([location, size, offset]) => {
      gl.enableVertexAttribArray(location);
      gl.vertexAttribPointer(location, size, gl.FLOAT, false, 52, 4 * offset);
      gl.vertexAttribDivisor(location, 1);
    });
    this.uniforms = Object.fromEntries(["rotation", "translation", "focal", "size"].map(
      (name) => [name, gl.getUniformLocation(this.program, name)]));
    gl.disable(gl.DEPTH_TEST);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);  // premultiplied, back to front
    gl.clearColor(...meta.view.background, 1);
  }

  // The Gaussians at `code` (K,): neutral + sum_k code_k offsets_k, for positions, colours, opacities.
  pose(code) {
    const { means, colors, opacities, means_offsets, colors_offsets, opacities_offsets } = this.arrays;
    const { n, k } = this;
    const out = this.posed;
    for (let i = 0; i < n; i++) {
      let x = means[3 * i], y = means[3 * i + 1], z = means[3 * i + 2];
      let r = colors[3 * i], g = colors[3 * i + 1], b = colors[3 * i + 2], o = opacities[i];
      for (let j = 0; j < k; j++) {
        const c = code[j];
        if (c === 0) continue;
        const at = 3 * (i * k + j);
        x += c * means_offsets[at]; y += c * means_offsets[at + 1]; z += c * means_offsets[at + 2];
        r += c * colors_offsets[at]; g += c * colors_offsets[at + 1]; b += c * colors_offsets[at + 2];
        o += c * opacities_offsets[i * k + j];
      }
      out.means[3 * i] = x; out.means[3 * i + 1] = y; out.means[3 * i + 2] = z;
      out.colors[3 * i] = r; out.colors[3 * i + 1] = g; out.colors[3 * i + 2] = b;
      out.alphas[i] = 1 / (1 + Math.exp(-o));
    }
  }

  // Depth-sort (far first, 16-bit counting sort), add SH band 1 for this camera, upload, draw.
  draw(camera) {
    const { gl, canvas, n, posed, instances, order, depths, keys, counts } = this;
    const { covariances, sh1 } = this.arrays;
    const width = Math.round(canvas.clientWidth * devicePixelRatio), height = Math.round(canvas.clientHeight * devicePixelRatio);
    if (canvas.width !== width || canvas.height !== height) [canvas.width, canvas.height] = [width, height];
    const { rows, translation } = camera.pose();
    const [fx, fy, fz] = rows[2];
    let near = Infinity, far = -Infinity;
    for (let i = 0; i < n; i++) {
      const d = fx * posed.means[3 * i] + fy * posed.means[3 * i + 1] + fz * posed.means[3 * i + 2];
      depths[i] = d;
      if (d < near) near = d;
      if (d > far) far = d;
    }
    const range = 65535 / Math.max(far - near, 1e-9);
    counts.fill(0);
    for (let i = 0; i < n; i++) counts[(keys[i] = ((far - depths[i]) * range) | 0)]++;
    for (let i = 1; i < 65536; i++) counts[i] += counts[i - 1];
    for (let i = n - 1; i >= 0; i--) order[--counts[keys[i]]] = i;
    const eye = camera.position;
    const band1 = sh1.length === 9 * n;
    for (let slot = 0; slot < n; slot++) {
      const i = order[slot], at = 13 * slot;
      const x = posed.means[3 * i], y = posed.means[3 * i + 1], z = posed.means[3 * i + 2];
      let r = posed.colors[3 * i], g = posed.colors[3 * i + 1], b = posed.colors[3 * i + 2];
      if (band1) {
        const dx = x - eye[0], dy = y - eye[1], dz = z - eye[2];
        const inv = SH_C1 / Math.hypot(dx, dy, dz);
        const basis = [-dy * inv, dz * inv, -dx * inv];
        for (let j = 0; j < 3; j++) {
          const s = 9 * i + 3 * j;
          r += basis[j] * sh1[s]; g += basis[j] * sh1[s + 1]; b += basis[j] * sh1[s + 2];
        }
      }
      instances[at] = x; instances[at + 1] = y; instances[at + 2] = z;
      instances[at + 3] = Math.max(r, 0); instances[at + 4] = Math.max(g, 0); instances[at + 5] = Math.max(b, 0);
      instances[at + 6] = posed.alphas[i];
      for (let j = 0; j < 6; j++) instances[at + 7 + j] = covariances[6 * i + j];
    }
    gl.viewport(0, 0, width, height);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffer);
    gl.bufferSubData(gl.ARRAY_BUFFER, 0, instances);
    const focal = 0.5 * height / Math.tan((this.meta.view.fov_y_deg * Math.PI) / 360);
    // mat3 uniforms are column-major: the columns of R are its rows' components.
    const r = rows;
    gl.uniformMatrix3fv(this.uniforms.rotation, false,
      [r[0][0], r[1][0], r[2][0], r[0][1], r[1][1], r[2][1], r[0][2], r[1][2], r[2][2]]);
    gl.uniform3fv(this.uniforms.translation, translation);
    gl.uniform2f(this.uniforms.focal, focal, focal);
    gl.uniform2f(this.uniforms.size, width, height);
    gl.drawArraysInstanced(gl.TRIANGLE_FAN, 0, 4, n);
  }
}

// The controls: play/pause, the frame slider, and (the synthetic head) its expression sliders, which
// change the frame's code by d code / d expression times the change.
function controls(meta, arrays, setCode) {
  const { frames, code_dims: k, named = [] } = meta;
  const play = document.getElementById("player-play");
  const slider = document.getElementById("player-frame");
  const label = document.getElementById("player-label");
  slider.max = String(frames - 1);
  const state = { frame: 0, playing: true };
  const expressionSliders = named.map(({ name, min, max }) => {
    const wrap = document.createElement("label");
    const input = Object.assign(document.createElement("input"),
      { type: "range", min, max, step: 0.01, id: `player-${name}` });
    wrap.append(name, input);
    document.getElementById("player-sliders").append(wrap);
    return input;
  });
  const frameCode = (frame) => arrays.codes.subarray(frame * k, (frame + 1) * k);
  const showFrame = (frame) => {
    state.frame = frame;
    slider.value = String(frame);
    label.textContent = `frame ${frame + 1} / ${frames}`;
    expressionSliders.forEach((input, j) => (input.value = String(arrays.expressions[frame * named.length + j])));
    setCode(frameCode(frame), frame);
  };
  const edited = () => {
    const code = Float32Array.from(frameCode(state.frame));
    expressionSliders.forEach((input, j) => {
      const change = Number(input.value) - arrays.expressions[state.frame * named.length + j];
      for (let c = 0; c < k; c++) code[c] += arrays.code_jacobian[c * named.length + j] * change;
    });
    setCode(code, state.frame);
  };
  const setPlaying = (playing) => {
    state.playing = playing;
    play.textContent = playing ? "Pause" : "Play";
  };
  play.addEventListener("click", () => setPlaying(!state.playing));
  slider.addEventListener("input", () => { setPlaying(false); showFrame(Number(slider.value)); });
  expressionSliders.forEach((input) => input.addEventListener("input", () => { setPlaying(false); edited(); }));
  showFrame(0);
  return { state, showFrame, setPlaying };
}

async function main() {
  const meta = JSON.parse(document.getElementById("viewer-view").textContent);
  const buffer = await gunzip(base64Bytes(document.getElementById("viewer-avatar").textContent));
  const arrays = readArrays(buffer, meta.layout);
  const canvas = document.getElementById("viewer-canvas");
  const player = new Player(meta, arrays, canvas);
  let dirty = true, shown = -1;
  const camera = new Orbit(canvas, meta.view, () => (dirty = true));
  const ui = controls(meta, arrays, (code, frame) => {
    player.pose(code);
    shown = frame;
    dirty = true;
  });
  window.addEventListener("resize", () => (dirty = true));
  // For scripts (and tests): show a frame, paused.
  window.avatarPlayer = { showFrame: (frame) => { ui.setPlaying(false); ui.showFrame(frame); }, meta };
  let last = performance.now(), drawn = 0;
  const tick = (now) => {
    if (ui.state.playing && now - last >= 1000 / meta.fps) {
      last = now;
      ui.showFrame((ui.state.frame + 1) % meta.frames);
    }
    if (dirty) {
      player.draw(camera);
      dirty = false;
      document.body.dataset.frame = String(shown);
      document.body.dataset.drawn = String(++drawn);
      document.body.dataset.state = "ready";
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

main().catch((error) => {
  document.body.dataset.state = "error";
  document.getElementById("viewer-error").textContent = String(error && error.stack ? error.stack : error);
  throw error;
});
