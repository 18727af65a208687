// Usage billing in the browser: a Pro customer turns overage on, spends past their credits
// through the metered API, sees the 80 % and 100 % banners (and gets each mail once), sees
// the overage and the projected charge on the billing page, and the stand-in's cycle-end
// order bills exactly that.
import { test, expect } from "@playwright/test";
import { Polar } from "@polar-sh/sdk";
import { controlsAuth, jsEnabled, open, payOnCheckout, signUpViaApi, uniqueEmail, waitForMail, watchConsole } from "./helpers";

const TOKEN = process.env.POLAR_ACCESS_TOKEN ?? "standin_e2e_token";

test("a Pro customer past the allotment sees alerts, overage and the charge Polar bills", async ({ page, baseURL }, testInfo) => {
  test.setTimeout(180_000);
  const errors = watchConsole(page);
  const email = uniqueEmail(testInfo, "overage");
  await signUpViaApi(page, email);

  await open(page, testInfo, "/pricing");
  await page.getByRole("button", { name: "Upgrade to Pro" }).click();
  await payOnCheckout(page, "4242 4242 4242 4242");
  await expect(page.getByTestId("checkout-confirmed")).toHaveText("You're on Pro", { timeout: 45_000 });

  // Before any overage: the period's usage (once the subscription's webhook has started the
  // period, which may come a moment after access is confirmed), and overage off.
  await expect.poll(async () => {
    await open(page, testInfo, "/billing");
    return page.getByTestId("period-spent").count();
  }, { timeout: 20_000 }).toBe(1);
  await expect(page.getByTestId("period-spent")).toHaveText("0");
  await expect(page.getByText(/Overage is off/)).toBeVisible();

  // Overage on, with a $45 cap; an API key.
  await open(page, testInfo, "/settings/billing");
  await page.getByLabel(/Keep calls working past my credits/).check();
  await page.getByLabel(/My overage cap per period/).fill("45");
  await page.getByRole("button", { name: "Save usage settings" }).click();
  await expect(page.getByText("Usage settings saved.")).toBeVisible();
  await expect(page.getByLabel(/Keep calls working past my credits/)).toBeChecked();
  await page.getByLabel("New key name").fill("overage");
  await page.getByRole("button", { name: "Create key" }).click();
  const key = (await page.getByTestId("new-api-key").textContent())!.trim();

  // 61 calls of 100 credits: past 80 % and 100 % of Pro's 5,000. Overage is only what neither
  // the whole period's allotment (most of it not yet released: advanced) nor the 1,000 free
  // credits cover: 100 credits.
  const text = "a".repeat(100_000);
  for (let i = 0; i < 61; i++) {
    const res = await page.request.post("/api/v1/text/stats", { headers: { authorization: `Bearer ${key}` }, data: { text } });
    expect(res.status(), await res.text()).toBe(200);
  }

  await open(page, testInfo, "/billing");
  await expect(page.locator('[data-alert="percent_80"]')).toContainText("You have used 80 % of this period's credits");
  await expect(page.locator('[data-alert="percent_100"]')).toContainText("You have used all of this period's credits");
  await expect(page.locator('[data-alert="overage"]')).toBeVisible();
  await expect(page.getByTestId("period-spent")).toHaveText("6,100");
  await expect(page.getByTestId("period-to-release")).toHaveText("0 credits");
  const released = Number((await page.getByTestId("period-released").textContent())!.replace(/[^0-9]/g, ""));
  const advanced = Number((await page.getByTestId("period-advanced").textContent())!.replace(/[^0-9]/g, ""));
  expect(released + advanced).toBe(5000);
  expect(advanced).toBeGreaterThan(4000);
  const overage = Number((await page.getByTestId("overage-units").textContent())!.replace(/[^0-9]/g, ""));
  expect(overage).toBe(100);
  const projected = (await page.getByTestId("projected-charge").textContent())!.trim();
  expect(projected).toBe(`$${(overage / 100).toFixed(2)}`);
  await page.screenshot({ path: `screenshots/${testInfo.project.name}-usage-overage.png`, fullPage: true });

  // Each alert mailed once.
  for (const subject of ["You have used 80 % of this period's credits", "You have used all of this period's credits"]) {
    await waitForMail(email, subject);
  }

  // Dismissing a banner hides it.
  await page.locator('[data-alert="percent_80"]').getByRole("button", { name: "Dismiss" }).click();
  if (!jsEnabled(testInfo)) await open(page, testInfo, "/billing");
  await expect(page.locator('[data-alert="percent_80"]')).toHaveCount(0);
  await expect(page.locator('[data-alert="percent_100"]')).toBeVisible();

  // The renewal: the stand-in bills the overage Polar received, to the cent.
  const polar = new Polar({ accessToken: TOKEN, serverURL: `${baseURL}/polar` });
  const customer = (await (await polar.customers.list({ email })).result.items)[0];
  const sub = (await polar.subscriptions.list({ customerId: customer.id })).result.items[0];
  // Every spend reached Polar first (the outbox drains within moments).
  await expect.poll(async () => {
    const meters = (await polar.customerMeters.list({ customerId: customer.id })).result.items;
    return meters.reduce((n, m) => n + (m.meter.name === "API credits overage" ? m.consumedUnits : 0), 0);
  }, { timeout: 20_000 }).toBe(overage);
  expect((await page.request.post(`/polar/_standin/subscriptions/${sub.id}/renew`, { headers: controlsAuth() })).status()).toBe(200);
  const orders = (await polar.orders.list({ customerId: customer.id, limit: 100 })).result.items;
  const billed = orders.filter((o) => o.billingReason === "subscription_meter_cycle");
  expect(billed).toHaveLength(1);
  expect(billed[0].netAmount).toBe(overage);
  expect(errors).toEqual([]);
});
