import { test, expect } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { hydrated, jsEnabled, open, signUpViaApi, uniqueEmail, watchConsole } from "./helpers";

const pages = [
  { path: "/", heading: "Plans, checkout, credits and invoices that add up.", signedIn: false },
  { path: "/pricing", heading: "Simple plans, credits that add up", signedIn: false },
  { path: "/signup", heading: "Create your account", signedIn: false },
  { path: "/login", heading: "Sign in", signedIn: false },
  { path: "/billing/success", heading: "No purchase to confirm", signedIn: false },
  { path: "/billing", heading: "Billing", signedIn: true },
  { path: "/settings/billing", heading: "Billing settings", signedIn: true },
];

for (const p of pages) {
  test(`${p.path} renders with no console errors and no accessibility violations`, async ({ page }, testInfo) => {
    const errors = watchConsole(page);
    if (p.signedIn) await signUpViaApi(page, uniqueEmail(testInfo));
    await open(page, testInfo, p.path);
    await expect(page.getByRole("heading", { level: 1, name: p.heading, exact: true })).toBeVisible();
    await expect(page.getByRole("banner")).toBeVisible();
    await expect(page.getByRole("navigation", { name: "Main" })).toBeVisible();
    await expect(page.getByRole("main")).toBeVisible();
    if (jsEnabled(testInfo)) {
      const results = await new AxeBuilder({ page }).analyze();
      expect(results.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
    }
    // Nothing overflows sideways on a 360 px phone.
    await page.setViewportSize({ width: 360, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth).catch(() => 0);
    expect(overflow).toBeLessThanOrEqual(0);
    await page.setViewportSize({ width: 1280, height: 800 });
    const name = p.path === "/" ? "home" : p.path.slice(1).replaceAll("/", "-");
    await page.screenshot({ path: `screenshots/${testInfo.project.name}-${name}.png`, fullPage: true });
    expect(errors).toEqual([]);
  });
}

test("an unknown address shows the 404 page with status 404", async ({ page }, testInfo) => {
  const res = await page.goto("/no-such-page");
  expect(res?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "We can't find that page" })).toBeVisible();
  await hydrated(page, testInfo);
});

test("the main navigation goes where it says and marks the current page", async ({ page }, testInfo) => {
  const errors = watchConsole(page);
  await open(page, testInfo, "/");
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Pricing" }).click();
  await expect(page).toHaveURL(/\/pricing$/);
  await expect(page.getByRole("heading", { level: 1, name: "Simple plans, credits that add up" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Pricing" })).toHaveAttribute("aria-current", "page");
  expect(errors).toEqual([]);
});

test("pages without islands download no wasm and no script", async ({ page }, testInfo) => {
  test.skip(!jsEnabled(testInfo), "what a browser with JavaScript fetches");
  const fetched: string[] = [];
  page.on("request", (req) => fetched.push(new URL(req.url()).pathname));
  await signUpViaApi(page, uniqueEmail(testInfo, "plain"));
  for (const path of ["/pricing", "/billing", "/settings/billing"]) {
    await page.goto(path);
    await page.waitForLoadState("networkidle");
  }
  expect(fetched.filter((p) => p.startsWith("/pkg/") && !p.endsWith(".css"))).toEqual([]);
});
