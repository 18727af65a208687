import { test, expect, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { execFileSync } from "node:child_process";
import { jsEnabled, open, signUpViaApi, uniqueEmail, watchConsole } from "./helpers";

/** `tally operator add EMAIL` on the server's database, as an operator of the deployment would. */
function makeOperator(email: string) {
  execFileSync(process.env.TALLY_BIN!, ["operator", "add", email], {
    env: { ...process.env, DATABASE_URL: process.env.E2E_DATABASE_URL! },
    stdio: "pipe",
  });
}

async function expectNotFound(page: Page, path: string) {
  const res = await page.goto(path);
  expect(res!.status(), path).toBe(404);
  await expect(page.getByRole("heading", { name: "We can't find that page" })).toBeVisible();
}

test("an operator finds a customer and grants credits once with a reason; others get 404", async ({ page, browser }, testInfo) => {
  const customerEmail = uniqueEmail(testInfo, "customer");
  const visitor = await browser.newContext();
  const customer = await visitor.newPage();
  await signUpViaApi(customer, customerEmail);
  // The customer is no operator: the console does not exist for them, nor for a visitor.
  await expectNotFound(customer, "/admin");
  await visitor.clearCookies();
  await expectNotFound(customer, "/admin");
  await visitor.close();

  const operatorEmail = uniqueEmail(testInfo, "operator");
  await signUpViaApi(page, operatorEmail);
  await expectNotFound(page, "/admin");
  makeOperator(operatorEmail);
  // From here on, no console error (the 404s above log one each, as they should).
  const errors = watchConsole(page);

  await open(page, testInfo, "/admin");
  await expect(page.getByRole("heading", { level: 1, name: "Operator console" })).toBeVisible();
  await page.getByLabel("Customer").fill(customerEmail.toUpperCase());
  await page.getByRole("button", { name: "Find" }).click();
  await page.getByRole("link", { name: customerEmail }).click();
  await expect(page.getByRole("heading", { level: 1, name: customerEmail })).toBeVisible();
  await expect(page.getByRole("heading", { name: "Balance: 1,000 credits" })).toBeVisible();
  if (jsEnabled(testInfo)) {
    const results = await new AxeBuilder({ page }).analyze();
    expect(results.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
  }

  await page.getByLabel("Credits", { exact: true }).fill("100");
  await page.getByLabel("Reason (kept in the audit log)").fill("Refund for the outage on Friday");
  // A double click sends the form twice at most; it applies once.
  await page.getByRole("button", { name: "Apply" }).dblclick();
  await expect(page.getByText("Done, and recorded in the audit log.")).toBeVisible();
  await expect(page.getByRole("heading", { name: "Balance: 1,100 credits" })).toBeVisible();
  await expect(page.getByRole("cell", { name: "Adjustment: Refund for the outage on Friday" })).toHaveCount(1);
  await expect(page.getByRole("cell", { name: "Refund for the outage on Friday", exact: true })).toHaveCount(1);
  await expect(page.getByRole("cell", { name: "balance 1000 → 1100" })).toBeVisible();
  await page.screenshot({ path: `screenshots/${testInfo.project.name}-admin-customer.png`, fullPage: true });
  expect(errors).toEqual([]);
});
