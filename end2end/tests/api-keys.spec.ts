import { test, expect } from "@playwright/test";
import { open, signUpViaApi, uniqueEmail, watchConsole } from "./helpers";

test("create an API key, see it once, call the API with it, revoke it", async ({ page }, testInfo) => {
  const errors = watchConsole(page);
  await signUpViaApi(page, uniqueEmail(testInfo, "keys"));
  await open(page, testInfo, "/billing");
  await expect(page.getByTestId("credits-total")).toHaveText("1,000");

  await open(page, testInfo, "/settings/billing");
  await expect(page.getByText("No API keys yet.")).toBeVisible();
  await page.getByLabel("New key name").fill("laptop");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = page.getByTestId("new-api-key");
  await expect(secret).toHaveText(/^tly_/);
  const key = (await secret.textContent())!.trim();
  await expect(page.getByRole("cell", { name: "laptop", exact: true })).toBeVisible();

  // The key works against the metered API and spends a credit.
  const res = await page.request.post("/api/v1/text/stats", {
    headers: { authorization: `Bearer ${key}` },
    data: { text: "Hello there. General Kenobi!" },
  });
  expect(res.status()).toBe(200);
  expect(res.headers()["x-credits-remaining"]).toBe("999");
  expect((await res.json()).words).toBe(4);

  // Shown once: a fresh visit no longer reveals it.
  await open(page, testInfo, "/settings/billing");
  await expect(page.getByTestId("new-api-key")).toHaveCount(0);
  await open(page, testInfo, "/billing");
  await expect(page.getByTestId("credits-total")).toHaveText("999");

  await open(page, testInfo, "/settings/billing");
  await page.getByRole("button", { name: "Revoke key laptop" }).click();
  await expect(page.getByText("No API keys yet.")).toBeVisible();
  const after = await page.request.post("/api/v1/text/stats", { headers: { authorization: `Bearer ${key}` }, data: { text: "x" } });
  expect(after.status()).toBe(401);
  expect(errors).toEqual([]);
});
