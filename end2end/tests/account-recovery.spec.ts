// Accounts a person can recover, with JavaScript off (ssr project) and on (hydrated): a
// forgotten password reset through the link a real SMTP server received, the link refused a
// second time, and a password change in the settings. Mail goes through the SMTP server
// scripts/test runs; the tests read it from its files (MAIL_DIR).
import { test, expect } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { PASSWORD, jsEnabled, linkIn, open, signUpViaApi, uniqueEmail, waitForMail, watchConsole } from "./helpers";

test("a forgotten password is reset through the mailed link, which works once", async ({ page, browser }, testInfo) => {
  const errors = watchConsole(page);
  const email = uniqueEmail(testInfo, "forgot");
  await signUpViaApi(page, email);
  await page.context().clearCookies();

  await open(page, testInfo, "/login");
  await page.getByRole("link", { name: "Forgot your password?" }).click();
  await expect(page.getByRole("heading", { name: "Reset your password" })).toBeVisible();
  if (jsEnabled(testInfo)) {
    const axe = await new AxeBuilder({ page }).analyze();
    expect(axe.violations.map((v) => v.id)).toEqual([]);
  }
  await page.getByLabel("Email").fill(email);
  await page.getByRole("button", { name: "Send me a reset link" }).click();
  await expect(page.getByRole("status")).toContainText("If an account exists for that address");

  const mail = await waitForMail(email, "Reset your Tally password");
  const link = linkIn(mail, "/reset-password?token=");
  await page.goto(link);
  await page.getByRole("textbox", { name: "New password" }).fill("a new and better passphrase");
  await page.getByRole("button", { name: "Save and sign in" }).click();
  await expect(page).toHaveURL(/\/billing\?done=password-reset/);
  await expect(page.getByText("Your new password is saved")).toBeVisible();

  // The same link again, in another browser: refused.
  const other = await browser.newContext({ javaScriptEnabled: jsEnabled(testInfo) });
  const stranger = await other.newPage();
  await stranger.goto(link);
  await expect(stranger.getByText("This reset link is not valid any more")).toBeVisible();
  await other.close();

  // The old password no longer works; the new one does.
  await page.context().clearCookies();
  await open(page, testInfo, "/login");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toContainText("don't match");
  // Without JavaScript the refused form comes back empty: type both again.
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("a new and better passphrase");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/billing$/);
  // The wrong password above is a 401, which Chromium logs.
  expect(errors.filter((e) => !/status of 401\b/.test(e))).toEqual([]);
});

test("a password is changed in the settings with the current one", async ({ page }, testInfo) => {
  const email = uniqueEmail(testInfo, "change");
  await signUpViaApi(page, email);
  await open(page, testInfo, "/settings/billing");
  await page.getByLabel("Current password").fill("not the password");
  await page.getByLabel("New password").fill("another fine passphrase");
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.locator("#field-current_password-error")).toContainText("not your current password");
  await page.getByLabel("Current password").fill(PASSWORD);
  await page.getByLabel("New password").fill("another fine passphrase");
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByText("Your password was changed")).toBeVisible();
  await waitForMail(email, "Your Tally password was changed");
});
