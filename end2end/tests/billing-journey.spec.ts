// The whole billing journey against the built-in Polar stand-in, with JavaScript off (ssr
// project) and on (hydrated): sign up, pay for Pro on the hosted checkout, wait for the success
// page to confirm, spend through the API, buy a pack, billing details with VAT, an invoice,
// cancel and undo, a declined card, an expired checkout, an upgrade previewed then confirmed,
// account deletion, and someone else's checkout id.
import { test, expect, type Page, type TestInfo } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { PASSWORD, hydrated, jsEnabled, linkIn, open, payOnCheckout, uniqueEmail, waitForMail, watchConsole } from "./helpers";

async function shot(page: Page, testInfo: TestInfo, name: string) {
  await page.screenshot({ path: `screenshots/${testInfo.project.name}-${name}.png`, fullPage: true });
}

async function noAxeViolations(page: Page, testInfo: TestInfo) {
  if (!jsEnabled(testInfo)) return;
  const results = await new AxeBuilder({ page }).analyze();
  expect(results.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
}

async function credits(page: Page, testInfo: TestInfo): Promise<number> {
  await open(page, testInfo, "/billing");
  return Number((await page.getByTestId("credits-total").textContent())!.replace(/,/g, ""));
}

async function fillBillingDetails(page: Page, testInfo: TestInfo, taxId: string) {
  await open(page, testInfo, "/settings/billing");
  await page.getByLabel("Company or name on invoices").fill("Ada GmbH");
  await page.getByLabel("Address", { exact: true }).fill("Unter den Linden 1");
  await page.getByLabel("Postal code").fill("10117");
  await page.getByLabel("City").fill("Berlin");
  await page.getByLabel("Country").selectOption("DE");
  await page.getByLabel("VAT or tax id (optional)").fill(taxId);
  await page.getByRole("button", { name: "Save billing details" }).click();
}

test("buy, use and manage a plan end to end", async ({ page }, testInfo) => {
  test.setTimeout(180_000);
  const errors = watchConsole(page);
  const email = uniqueEmail(testInfo, "journey");

  // Sign up: the sign-up page promises the free credits, which come with the confirmed address.
  await open(page, testInfo, "/signup");
  await expect(page.getByTestId("free-credits")).toContainText("1,000 free credits once you confirm your email address");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page).toHaveURL(/\/billing$/);
  await hydrated(page, testInfo);
  await expect(page.getByTestId("confirm-email")).toContainText("Confirm your email address to receive your 1,000 free credits");
  await expect(page.getByTestId("credits-total")).toHaveText("0");
  // The confirmation mail, through a real SMTP server, and its link in the browser.
  const mail = await waitForMail(email, "Confirm your email address");
  await page.goto(linkIn(mail, "/verify-email?token="));
  await page.getByRole("button", { name: "Confirm my email address" }).click();
  await expect(page).toHaveURL(/\/billing\?done=email-confirmed/);
  await expect(page.getByTestId("credits-total")).toHaveText("1,000");
  await expect(page.getByTestId("confirm-email")).toHaveCount(0);
  await expect(page.locator(".plan-name")).toContainText("Free");

  // Pricing → Pro → the hosted checkout → the success page waits, then confirms.
  await open(page, testInfo, "/pricing");
  await shot(page, testInfo, "journey-pricing");
  await page.getByRole("button", { name: "Upgrade to Pro" }).click();
  await expect(page.getByRole("heading", { name: "Pay Pro" })).toBeVisible();
  await shot(page, testInfo, "journey-checkout");
  await payOnCheckout(page, "4242 4242 4242 4242");
  await expect(page).toHaveURL(/\/billing\/success\?checkout_id=/, { timeout: 15_000 });
  // The stand-in's Customer State lags like Polar's (POLAR_STANDIN_STATE_LAG_MS in scripts/test):
  // the page first says the payment is processing, then polls until the benefit is granted.
  await expect(page.getByTestId("checkout-processing")).toBeVisible();
  await shot(page, testInfo, "journey-processing");
  await expect(page.getByTestId("checkout-confirmed")).toHaveText("You're on Pro", { timeout: 45_000 });
  await shot(page, testInfo, "journey-success");
  await page.getByRole("link", { name: "Go to billing" }).click();

  // Billing shows Pro, its renewal and the first day's allotment on top of the free credits.
  await expect(page.locator(".plan-name")).toContainText("Pro");
  await expect(page.getByTestId("renewal")).toContainText("Renews on");
  await expect(page.getByTestId("accrual")).toContainText("more to come day by day");
  await expect(page.getByTestId("next-accrual").locator("time")).toHaveAttribute("datetime", /T\d\d:\d\d:\d\dZ$/);
  // With JavaScript, in the visitor's zone (New York in this project); without, in UTC.
  await expect(page.getByTestId("next-accrual").locator("time")).toHaveText(jsEnabled(testInfo) ? /\b(EST|EDT|GMT-[45])$/ : /UTC$/);
  const afterPro = await credits(page, testInfo);
  expect(afterPro).toBeGreaterThan(1000);
  await noAxeViolations(page, testInfo);
  await shot(page, testInfo, "journey-billing");

  // Spend through the metered API: the meter drops by one.
  await open(page, testInfo, "/settings/billing");
  await page.getByLabel("New key name").fill("journey");
  await page.getByRole("button", { name: "Create key" }).click();
  const key = (await page.getByTestId("new-api-key").textContent())!.trim();
  const spent = await page.request.post("/api/v1/text/stats", { headers: { authorization: `Bearer ${key}` }, data: { text: "One credit, please." } });
  expect(spent.status()).toBe(200);
  expect(await credits(page, testInfo)).toBe(afterPro - 1);

  // A credit pack: the balance rises by 50.
  await open(page, testInfo, "/pricing");
  await page.getByRole("button", { name: "Buy 50 credits" }).click();
  await payOnCheckout(page, "4242424242424242");
  await expect(page.getByTestId("checkout-confirmed")).toHaveText("50 credits added", { timeout: 45_000 });
  expect(await credits(page, testInfo)).toBe(afterPro - 1 + 50);

  // Billing details: an invalid VAT id is refused with a field error; a valid one is saved.
  await fillBillingDetails(page, testInfo, "DE123");
  await expect(page.locator("#field-tax_id-error")).toContainText("DE VAT number");
  await fillBillingDetails(page, testInfo, "DE 123 456 789");
  await expect(page.getByText("Billing details saved. New invoices carry them.")).toBeVisible();
  await expect(page.getByLabel("VAT or tax id (optional)")).toHaveValue("DE123456789");

  // An invoice: generate, "preparing", then download the PDF.
  const generate = page.getByRole("button", { name: /^Generate invoice for 50 credits/ });
  await generate.click();
  await expect(page.getByText("Your invoice is being prepared.")).toBeVisible();
  let href: string | null = null;
  for (let i = 0; i < 20 && !href; i++) {
    await open(page, testInfo, "/settings/billing");
    const link = page.getByRole("link", { name: /^Download invoice for 50 credits/ });
    if (await link.count()) href = await link.getAttribute("href");
    else await page.waitForTimeout(500);
  }
  expect(href).toMatch(/^\/billing\/invoices\//);
  await noAxeViolations(page, testInfo);
  await shot(page, testInfo, "journey-settings-billing");
  const pdf = await page.request.get(href!);
  expect(pdf.headers()["content-type"]).toBe("application/pdf");
  expect((await pdf.body()).subarray(0, 8).toString()).toBe("%PDF-1.4");

  // Cancel at period end, then undo.
  await open(page, testInfo, "/billing");
  await page.getByRole("button", { name: "Cancel at period end" }).click();
  await expect(page.getByTestId("renewal")).toContainText("it will not renew");
  await expect(page.getByRole("status").filter({ hasText: "will end at the end of the period" })).toBeVisible();
  await page.getByRole("button", { name: "Keep my subscription" }).click();
  await expect(page.getByTestId("renewal")).toContainText("Renews on");

  // A declined card: the checkout stays open with the error; then it expires.
  await open(page, testInfo, "/pricing");
  await page.getByRole("button", { name: "Buy 100 credits" }).click();
  await payOnCheckout(page, "4000 0000 0000 0002");
  await expect(page.getByRole("alert")).toHaveText("Your card was declined.", { timeout: 15_000 });
  await shot(page, testInfo, "journey-declined");
  await page.getByRole("button", { name: "Let this checkout expire now" }).click();
  await expect(page.getByRole("heading", { name: "This checkout has expired" })).toBeVisible();
  expect(await credits(page, testInfo)).toBe(afterPro - 1 + 50);

  // Change plan: pricing → a preview of today's charge and the credits → confirm → Business.
  await open(page, testInfo, "/pricing");
  await page.getByRole("link", { name: "Upgrade to Business" }).click();
  await expect(page.getByRole("heading", { name: "Upgrade to Business" })).toBeVisible();
  await expect(page.getByTestId("charge-now")).toContainText(/\$(29|30)\.\d\d, for the rest of this period/);
  await expect(page.getByTestId("credit-effect")).toContainText(/^\+\d[\d,]* credits for the rest of this period/);
  await expect(page.getByTestId("renewal-effect")).toContainText("$49.00 on");
  await noAxeViolations(page, testInfo);
  await shot(page, testInfo, "journey-change-plan");
  await page.setViewportSize({ width: 360, height: 740 });
  expect(await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth), "no sideways overflow at 360 px").toBeLessThanOrEqual(0);
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.getByRole("button", { name: /^Upgrade and pay / }).click();
  await expect(page).toHaveURL(/\/billing\?done=upgraded$/);
  await expect(page.getByRole("status").filter({ hasText: "Your plan was upgraded." })).toBeVisible();
  // Customer State lags (3 s here, ~10 s at Polar): the plan name follows on a later load.
  await expect
    .poll(async () => {
      await open(page, testInfo, "/billing");
      return page.locator(".plan-name").textContent();
    }, { timeout: 30_000 })
    .toContain("Business");
  expect(await credits(page, testInfo)).toBeGreaterThan(afterPro - 1 + 50);

  // Delete the account, confirmed by typing the email: signed out, and Polar's customer is gone.
  await open(page, testInfo, "/settings/billing");
  await page.getByLabel("Type your email to confirm").fill(email);
  await page.getByRole("button", { name: "Delete my account" }).click();
  await expect(page.getByText("Your account was deleted")).toBeVisible();
  await page.goto("/billing");
  await expect(page).toHaveURL(/\/login\?next=/);

  // The refusals above answer with their real statuses (422 for the declined card and the bad
  // VAT id, 410 for the expired checkout), which Chromium logs; anything else is a failure.
  expect(errors.filter((e) => !/status of (410|422)\b/.test(e))).toEqual([]);
});

test("another user's checkout id on the success page is a 404", async ({ browser, page }, testInfo) => {
  test.setTimeout(90_000);
  // Alice pays for a pack.
  await open(page, testInfo, "/signup");
  await page.getByLabel("Email").fill(uniqueEmail(testInfo, "alice"));
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page).toHaveURL(/\/billing$/);
  await open(page, testInfo, "/pricing");
  await page.getByRole("button", { name: "Buy 50 credits" }).click();
  await payOnCheckout(page, "4242424242424242");
  await expect(page).toHaveURL(/\/billing\/success\?checkout_id=/, { timeout: 15_000 });
  const successUrl = page.url();

  // Mallory, in her own session, opens Alice's success URL.
  const other = await browser.newContext({ javaScriptEnabled: jsEnabled(testInfo) });
  const mallory = await other.newPage();
  const res0 = await mallory.request.post("/api/signup", { form: { email: uniqueEmail(testInfo, "mallory"), password: PASSWORD }, maxRedirects: 0 });
  expect([200, 302]).toContain(res0.status());
  const res = await mallory.goto(successUrl);
  expect(res?.status()).toBe(404);
  await expect(mallory.getByRole("heading", { name: "Purchase not found" })).toBeVisible();
  await other.close();
});

test("the pricing page switches between monthly and yearly prices", async ({ page }, testInfo) => {
  await open(page, testInfo, "/pricing");
  const pro = page.locator(".plan").filter({ has: page.getByRole("heading", { name: "Pro", exact: true }) });
  await expect(pro.locator(".plan__price")).toHaveText("$19/month");
  await page.getByRole("navigation", { name: "Billing period" }).getByRole("link", { name: /^Yearly/ }).click();
  await expect(page).toHaveURL(/\/pricing\?billing=yearly$/);
  await expect(pro.locator(".plan__price")).toHaveText("$190/year");
  await expect(page.getByRole("link", { name: /^Yearly/ })).toHaveAttribute("aria-current", "page");
  await shot(page, testInfo, "pricing-yearly");
  await page.getByRole("link", { name: "Monthly" }).click();
  await expect(pro.locator(".plan__price")).toHaveText("$19/month");
});
