import { expect, type Page, type TestInfo } from "@playwright/test";

export const PASSWORD = "correct horse battery";

/** A unique address per test and project, so runs never collide. */
export function uniqueEmail(testInfo: TestInfo, tag = "user"): string {
  const rand = Math.random().toString(36).slice(2, 8);
  return `${tag}-${testInfo.project.name}-${Date.now()}-${rand}@example.com`;
}

export function jsEnabled(testInfo: TestInfo): boolean {
  return testInfo.project.name !== "ssr";
}

/** Collects console errors and uncaught exceptions for the whole test. */
export function watchConsole(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  page.on("pageerror", (err) => errors.push(String(err)));
  return errors;
}

/** Navigates and, with JavaScript on, waits until the page is hydrated. */
export async function open(page: Page, testInfo: TestInfo, path: string) {
  await page.goto(path);
  if (jsEnabled(testInfo)) {
    await expect(page.locator("body[data-hydrated]")).toBeAttached();
  }
}

/** Creates an account through the same endpoint the form posts to; the context keeps the cookie. */
export async function signUpViaApi(page: Page, email: string) {
  const res = await page.request.post("/api/signup", { form: { email, password: PASSWORD }, maxRedirects: 0 });
  expect([200, 302]).toContain(res.status());
}
