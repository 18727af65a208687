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

/**
 * With JavaScript on, waits until the page's islands are live (the body gets `data-hydrated`
 * once they are). A page without islands is plain HTML and loads no wasm: nothing to wait for.
 */
export async function hydrated(page: Page, testInfo: TestInfo) {
  await page.waitForLoadState("domcontentloaded");
  if (jsEnabled(testInfo) && (await page.locator("leptos-island").count()) > 0) {
    await expect(page.locator("body[data-hydrated]")).toBeAttached();
  }
}

/** Navigates and, with JavaScript on, waits until the page's islands are live. */
export async function open(page: Page, testInfo: TestInfo, path: string) {
  await page.goto(path);
  await hydrated(page, testInfo);
}

/**
 * Creates an account through the same endpoint the form posts to and confirms its address
 * through the mail it was sent; the context keeps the cookie.
 */
export async function signUpViaApi(page: Page, email: string) {
  const res = await page.request.post("/api/signup", { form: { email, password: PASSWORD }, maxRedirects: 0 });
  expect([200, 302]).toContain(res.status());
  await confirmViaApi(page, email);
}

/** The stand-in's controls token (scripts/test gives the server and the tests the same one). */
export function controlsAuth(): Record<string, string> {
  return { authorization: `Bearer ${process.env.STANDIN_CONTROLS_TOKEN ?? ""}` };
}

/**
 * Waits for a mail to `to` whose subject contains `subject` to reach the real SMTP server
 * scripts/test runs (it keeps each message as a file in MAIL_DIR); returns the message.
 */
export async function waitForMail(to: string, subject: string, after = 0): Promise<string> {
  const fs = await import("node:fs");
  const path = await import("node:path");
  const dir = process.env.MAIL_DIR;
  if (!dir) throw new Error("MAIL_DIR is not set: run the browser tests through scripts/test");
  const deadline = Date.now() + 20_000;
  for (;;) {
    const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".eml")) : [];
    const found = files
      .map((f) => ({ n: Number(f.replace(".eml", "")), text: fs.readFileSync(path.join(dir, f), "utf8") }))
      .filter((m) => m.n > after && m.text.includes(`X-Envelope-To: ${to}`) && m.text.includes(subject))
      .sort((a, b) => b.n - a.n);
    if (found.length > 0) return decodeQuotedPrintable(found[0].text);
    if (Date.now() > deadline) throw new Error(`no mail to ${to} about "${subject}" arrived`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Undoes quoted-printable soft line breaks and escapes (as a mail reader would). */
function decodeQuotedPrintable(mail: string): string {
  if (!/Content-Transfer-Encoding: quoted-printable/i.test(mail)) return mail;
  return mail.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}

/** The first link in a mail that contains `path`. */
export function linkIn(mail: string, path: string): string {
  const link = mail.split(/\s+/).find((w) => w.includes(path));
  if (!link) throw new Error(`no ${path} link in the mail:\n${mail}`);
  return link;
}

/** Confirms `email` through the link in its confirmation mail (as its owner would, by API). */
export async function confirmViaApi(page: Page, email: string) {
  const mail = await waitForMail(email, "Confirm your email address");
  const token = new URL(linkIn(mail, "/verify-email?token=")).searchParams.get("token")!;
  const res = await page.request.post("/api/confirm-email", { form: { token }, maxRedirects: 0 });
  expect([200, 302]).toContain(res.status());
}

/** Fills the stand-in's hosted checkout and pays with `card`. */
export async function payOnCheckout(page: Page, card: string) {
  await expect(page).toHaveURL(/\/polar\/checkout\/polar_c_/);
  await page.getByLabel("Name on invoice").fill("Ada Lovelace");
  await page.getByLabel("Country").selectOption("DE");
  await page.getByLabel("Address").first().fill("Unter den Linden 1");
  await page.getByLabel(/^Card number/).fill(card);
  await page.getByRole("button", { name: /^Pay / }).click();
}
