import react from '@vitejs/plugin-react';
import { defineConfig } from 'vitest/config';

// Conclave serves the build under a configurable base path, so every URL in it is relative.
export default defineConfig({
  base: './',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // The crypto WebAssembly (about 5 MB) is loaded on sign-in, never on first load.
    chunkSizeWarningLimit: 6000,
  },
  server: {
    // `npm run dev -w web` against a Conclave on the default port.
    proxy: {
      '/_matrix': 'http://localhost:8008',
      '/_conclave': { target: 'ws://localhost:8008', ws: true },
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
  },
});
