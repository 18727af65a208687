import { test, expect, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { execFileSync } from "node:child_process";
import { PASSWORD, hydrated, jsEnabled, open, signUpViaApi, uniqueEmail, watchConsole } from "./helpers";

/** `tally operator add EMAIL` on the server's database, as an operator of the deployment would. */
function makeOperator(email: string) {
  // From the project's root, as an operator would run it: the command keeps what it makes
  // (its local session secret) in the project's git-ignored .data, not in end2end/.
  execFileSync(process.env.TALLY_BIN!, ["operator", "add", email], {
    cwd: "..",
    env: { ...process.env, DATABASE_URL: process.env.E2E_DATABASE_URL! },
    stdio: "pipe",
  });
}

/** A statement on the server's database (psql, as scripts/test uses it): the test's setup. */
function sql(query: string): string {
  return execFileSync("psql", [process.env.E2E_DATABASE_URL!, "-qAtX", "-c", query], { stdio: "pipe" }).toString().trim();
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

test("an operator whose sign-in is old signs in again, then retries a parked webhook and revokes a key", async ({ page, browser }, testInfo) => {
  // A customer with an API key, whose pack order's webhook was parked (its handler failed ten
  // times while, say, the database was down): "I paid but have no credits".
  const customerEmail = uniqueEmail(testInfo, "parked");
  const context = await browser.newContext();
  const customer = await context.newPage();
  await signUpViaApi(customer, customerEmail);
  await open(customer, testInfo, "/settings/billing");
  await customer.getByLabel("New key name").fill("server");
  await customer.getByRole("button", { name: "Create key" }).click();
  const key = (await customer.getByTestId("new-api-key").textContent())!.trim();
  await context.close();
  const id = sql(`SELECT id FROM users WHERE email = '${customerEmail}'`);
  const webhookId = `msg_parked_${testInfo.project.name}`;
  const order = {
    type: "order.paid",
    timestamp: new Date().toISOString(),
    data: {
      id: `ord_parked_${testInfo.project.name}`, status: "paid", billing_reason: "purchase",
      subtotal_amount: 500, net_amount: 500, tax_amount: 95, total_amount: 595,
      refunded_amount: 0, refunded_tax_amount: 0, currency: "usd",
      product_id: "11111111-1111-4111-8111-111111111150",
      product: { id: "11111111-1111-4111-8111-111111111150", name: "50 credits", metadata: { credits: 50 } },
      customer: { id: "c0ffee00-0000-4000-8000-000000000001", external_id: id, email: customerEmail },
    },
  };
  sql(
    `INSERT INTO webhook_events (webhook_id, event_type, payload, user_id, status, attempts, last_error)
     VALUES ('${webhookId}', 'order.paid', '${JSON.stringify(order)}'::jsonb, '${id}', 'failed', 10, 'database unavailable')`,
  );

  const operatorEmail = uniqueEmail(testInfo, "late-operator");
  await signUpViaApi(page, operatorEmail);
  makeOperator(operatorEmail);
  const errors = watchConsole(page);
  // Signed in 20 minutes ago.
  sql(`UPDATE sessions SET created_at = now() - interval '20 minutes'
        WHERE user_id = (SELECT id FROM users WHERE email = '${operatorEmail}')`);
  await open(page, testInfo, `/admin/customers/${id}`);
  await expect(page.getByText("Acting needs a sign-in of the last 15 minutes.")).toBeVisible();
  await expect(page.getByRole("cell", { name: "database unavailable" })).toBeVisible();
  // Acting anyway is refused, and says why.
  await page.getByLabel(`Reason for retrying ${webhookId}`).fill("Database is back; apply the order");
  await page.getByRole("button", { name: "Retry" }).click();
  await expect(page.getByText(/Your sign-in is over 15 minutes old: sign in again, then repeat this\./)).toBeVisible();
  expect(sql(`SELECT status FROM webhook_events WHERE webhook_id = '${webhookId}'`)).toBe("failed");
  expect(sql(`SELECT count(*) FROM operator_audit WHERE target_user = '${id}'`)).toBe("0");

  await page.getByRole("link", { name: "Sign in again" }).first().click();
  await expect(page).toHaveURL(/\/login\?next=/);
  await page.getByLabel("Email").fill(operatorEmail);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("heading", { level: 1, name: customerEmail })).toBeVisible();
  await hydrated(page, testInfo);
  await expect(page.getByText("Acting needs a sign-in of the last 15 minutes.")).toHaveCount(0);

  // Retry the parked webhook: the order is applied, once.
  await page.getByLabel(`Reason for retrying ${webhookId}`).fill("Database is back; apply the order");
  await page.getByRole("button", { name: "Retry" }).click();
  await expect(page.getByText("Done, and recorded in the audit log.")).toBeVisible();
  await expect(page.getByRole("cell", { name: `webhook ${webhookId}: parked → pending` })).toBeVisible();
  await expect(async () => {
    await page.reload();
    await expect(page.getByRole("heading", { name: "Balance: 1,050 credits" })).toBeVisible({ timeout: 1000 });
  }).toPass({ timeout: 15_000 });
  await expect(page.getByRole("button", { name: "Retry" })).toHaveCount(0);
  await hydrated(page, testInfo);

  // Revoke the key: it stops working at once.
  const revoke = page.getByRole("button", { name: /^Revoke tly_/ });
  const prefix = (await revoke.textContent())!.replace("Revoke ", "").trim();
  expect(key.startsWith(prefix)).toBe(true);
  await page.getByLabel(`Reason for revoking ${prefix}`).fill("Key posted in a public issue");
  await revoke.click();
  await expect(page.getByText("Done, and recorded in the audit log.")).toBeVisible();
  await expect(page.getByRole("cell", { name: `key ${prefix}: revoked` })).toBeVisible();
  const res = await page.request.post("/api/v1/text/stats", {
    headers: { authorization: `Bearer ${key}` },
    data: { text: "Still there?" },
  });
  expect(res.status()).toBe(401);
  expect(sql(`SELECT string_agg(action, ',' ORDER BY id) FROM operator_audit WHERE target_user = '${id}'`)).toBe(
    "retry_webhook,revoke_api_key",
  );
  if (jsEnabled(testInfo)) {
    const results = await new AxeBuilder({ page }).analyze();
    expect(results.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
  }
  await page.screenshot({ path: `screenshots/${testInfo.project.name}-admin-actions.png`, fullPage: true });

  // The audit log, filtered to this customer, and its CSV; the health page.
  await open(page, testInfo, "/admin");
  await page.getByRole("link", { name: "Audit log: every operator action" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Audit log" })).toBeVisible();
  await page.getByLabel("Customer (Tally user id)").fill(id);
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page.getByRole("cell", { name: "Key posted in a public issue" })).toBeVisible();
  await expect(page.getByRole("cell", { name: "Database is back; apply the order" })).toBeVisible();
  const csv = await page.request.get(`/admin/audit.csv?customer=${id}`);
  expect(csv.status()).toBe(200);
  expect((await csv.text()).trim().split("\n")).toHaveLength(3);
  if (jsEnabled(testInfo)) {
    const results = await new AxeBuilder({ page }).analyze();
    expect(results.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
  }
  await open(page, testInfo, "/admin/health");
  await expect(page.getByRole("heading", { level: 1, name: "Health" })).toBeVisible();
  await expect(page.getByRole("heading", { name: "Webhook inbox" })).toBeVisible();
  if (jsEnabled(testInfo)) {
    const results = await new AxeBuilder({ page }).analyze();
    expect(results.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
  }
  await page.screenshot({ path: `screenshots/${testInfo.project.name}-admin-health.png`, fullPage: true });
  expect(errors).toEqual([]);
});

test("an operator compares a customer's plan with Polar, resyncs once, and filters their ledger", async ({ page }, testInfo) => {
  const customerEmail = uniqueEmail(testInfo, "plan");
  await signUpViaApi(page, customerEmail);
  const id = sql(`SELECT id FROM users WHERE email = '${customerEmail}'`);
  const operatorEmail = uniqueEmail(testInfo, "plan-operator");
  await page.context().clearCookies();
  await signUpViaApi(page, operatorEmail);
  makeOperator(operatorEmail);
  const errors = watchConsole(page);

  await open(page, testInfo, `/admin/customers/${id}`);
  await expect(page.getByRole("heading", { name: "Plan and billing" })).toBeVisible();
  await expect(page.getByText("No subscription.")).toBeVisible();
  await expect(page.getByRole("heading", { name: "Polar's Customer State, asked now" })).toHaveCount(0);
  // Asking Polar is a plain link: it reads, and changes nothing.
  await page.getByRole("link", { name: "Ask Polar now" }).click();
  await expect(page.getByRole("heading", { name: "Polar's Customer State, asked now" })).toBeVisible();
  await expect(page.getByText(/^Plan: Free/).last()).toBeVisible();
  await hydrated(page, testInfo);

  await page.getByLabel("Reason for the resync").fill("Customer asks why they are on Free");
  // A double click sends the form twice at most; it is recorded once.
  await page.getByRole("button", { name: "Resync from Polar" }).dblclick();
  await expect(page.getByText(/Done, and recorded in the audit log\.|That was done already/)).toBeVisible();
  await expect(page.getByRole("cell", { name: "Customer asks why they are on Free" })).toHaveCount(1);
  await expect(page.getByRole("cell", { name: /plan (Free|unknown) → Free/ })).toBeVisible();
  expect(sql(`SELECT count(*) FROM operator_audit WHERE target_user = '${id}' AND action = 'resync'`)).toBe("1");

  // The ledger: the sign-up's free credits, by kind; nothing of another kind.
  await hydrated(page, testInfo);
  await page.getByLabel("Kind").selectOption("free_grant");
  await page.getByRole("button", { name: "Show" }).click();
  await expect(page).toHaveURL(/kind=free_grant/);
  await expect(page.getByRole("cell", { name: "Free credits" })).toHaveCount(1);
  await expect(page.getByLabel("Kind")).toHaveValue("free_grant");
  await page.getByLabel("Kind").selectOption("purchase");
  await page.getByRole("button", { name: "Show" }).click();
  await expect(page.getByText("No entry matches.")).toBeVisible();
  await page.getByRole("link", { name: "Clear" }).click();
  await expect(page.getByRole("cell", { name: "Free credits" })).toHaveCount(1);
  if (jsEnabled(testInfo)) {
    const results = await new AxeBuilder({ page }).analyze();
    expect(results.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
  }

  // The health page's quota table.
  await open(page, testInfo, "/admin/health");
  await expect(page.getByRole("heading", { name: "API quota" })).toBeVisible();
  await expect(page.getByRole("cell", { name: "Pages (POLAR_PAGE_REQUESTS_PER_MINUTE)" })).toBeVisible();
  expect(errors).toEqual([]);
});
