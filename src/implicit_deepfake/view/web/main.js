// viewer.html's script: reads the splats and the camera the page carries inline and draws them
// with Spark (three.js). Nothing is fetched: pages opened from file:// may not read sibling files.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";

function base64Bytes(text) {
  const binary = atob(text.replace(/\s+/g, ""));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function main() {
  const view = JSON.parse(document.getElementById("viewer-view").textContent);
  const splats = base64Bytes(document.getElementById("viewer-splats").textContent);
  const canvas = document.getElementById("viewer-canvas");

  const renderer = new THREE.WebGLRenderer({ canvas, antialias: false });
  renderer.setPixelRatio(window.devicePixelRatio);
  renderer.setClearColor(new THREE.Color(...view.background), 1);
  const scene = new THREE.Scene();
  scene.add(new SparkRenderer({ renderer }));
  const camera = new THREE.PerspectiveCamera(view.fov_y_deg, 1, view.near, view.far);
  camera.up.set(...view.up);
  camera.position.set(...view.position);
  const controls = new OrbitControls(camera, canvas);
  controls.target.set(...view.look_at);
  controls.update();

  const resize = () => {
    const width = canvas.clientWidth, height = canvas.clientHeight;
    renderer.setSize(width, height, false);
    camera.aspect = width / height;
    camera.updateProjectionMatrix();
  };
  window.addEventListener("resize", resize);
  resize();

  const mesh = new SplatMesh({ fileBytes: splats, fileName: "point_cloud.spz" });
  scene.add(mesh);
  await mesh.initialized;
  let frames = 0;
  renderer.setAnimationLoop(() => {
    controls.update();
    renderer.render(scene, camera);
    // Sorting happens in a worker: the first frames may still be empty.
    if (++frames === 30) document.body.dataset.state = "ready";
  });
}

main().catch((error) => {
  document.body.dataset.state = "error";
  document.getElementById("viewer-error").textContent = String(error && error.stack ? error.stack : error);
  throw error;
});
