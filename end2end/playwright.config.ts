import { defineConfig, devices } from "@playwright/test";

// Debian's Chromium (apt-get install chromium): Playwright's own browser download cannot work
// offline. The app must already be running at BASE_URL (scripts/test starts it).
const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const baseURL = process.env.BASE_URL ?? "http://127.0.0.1:3000";

const launchOptions = {
  executablePath,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
  ],
};

export default defineConfig({
  testDir: "./tests",
  globalSetup: "./wait-for-server.ts",
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  workers: 1,
  reporter: [["list"]],
  outputDir: "test-results",
  use: { baseURL, trace: "off", screenshot: "only-on-failure" },
  projects: [
    {
      // Server-rendered pages with JavaScript off: every form must work as plain HTML.
      name: "ssr",
      testIgnore: /.*\.hydrate\.spec\.ts/,
      use: { ...devices["Desktop Chrome"], javaScriptEnabled: false, launchOptions },
    },
    {
      // The same specs with JavaScript on: the islands hydrated, plus the *.hydrate.spec.ts
      // ones. A visitor's zone that is not the server's, so local times show as such.
      name: "hydrated",
      use: { ...devices["Desktop Chrome"], javaScriptEnabled: true, timezoneId: "America/New_York", launchOptions },
    },
  ],
});
