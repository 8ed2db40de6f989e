// Builds build/viewer.js (`npm run build`). One change to NiiVue 0.69.0 on the way, checked below:
//
// NiiVue's refreshLayers() recomputes a 3D gradient texture (a blur pass and a Sobel pass over the
// whole volume, plus a zero-filled RGBA upload) every time a volume's texture is rebuilt: on load
// and on every window/level change. The gradient only lights volume renderings, which this viewer
// never draws (axial/coronal/sagittal slices only, multiplanarShowRender NEVER). On a software
// WebGL (Chromium's SwiftShader, no GPU) it was about three quarters of the time from "volume
// arrived" to "drawn" for a 512x512x133 CT (benchmarks/bench_app.py, docs/benchmarks.md). NiiVue
// has no option to skip it (its useCustomGradientTexture flag is not consulted there), so the
// bundle makes the call conditional on a `skipGradient` property that src/viewer.js sets per pane.
import { build } from "esbuild";
import { readFile } from "node:fs/promises";

const GRADIENT_CALL = "      this.volumeTexture = outTexture;\n      this.gradientTexture = gradientGL({";
const PATCHED = "      this.volumeTexture = outTexture;\n      if (!this.skipGradient) this.gradientTexture = gradientGL({";

const skipGradient = {
  name: "niivue-skip-gradient",
  setup(b) {
    b.onLoad({ filter: /@niivue[\\/]niivue[\\/]build[\\/]niivue[\\/]index\.js$/ }, async (args) => {
      const src = await readFile(args.path, "utf8");
      const n = src.split(GRADIENT_CALL).length - 1;
      if (n !== 1) throw new Error(`NiiVue patch: expected the refreshLayers gradient call once, found it ${n} times (NiiVue version changed?)`);
      return { contents: src.replace(GRADIENT_CALL, PATCHED), loader: "js" };
    });
  },
};

await build({
  entryPoints: ["src/viewer.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  outfile: "build/viewer.js",
  plugins: [skipGradient],
  logLevel: "info",
});
