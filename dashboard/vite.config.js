import { defineConfig } from "vite";

// Built into the Python package, which serves it at "/" (relative asset paths).
export default defineConfig({
  base: "./",
  build: {
    outDir: "../src/wattvisor/api/dashboard_static",
    emptyOutDir: true,
    assetsDir: "assets",
  },
});
