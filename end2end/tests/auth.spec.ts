import { test, expect } from "@playwright/test";
import { PASSWORD, hydrated, open, uniqueEmail, watchConsole } from "./helpers";

test("sign up, see yourself in the header, sign out, sign back in", async ({ page }, testInfo) => {
  const errors = watchConsole(page);
  const email = uniqueEmail(testInfo);

  await open(page, testInfo, "/signup");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();

  await expect(page).toHaveURL(/\/billing$/);
  await expect(page.getByRole("heading", { name: "Billing", level: 1 })).toBeVisible();
  await expect(page.getByTestId("signed-in-user")).toHaveText(email);

  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByRole("link", { name: "Sign in" })).toBeVisible();
  await expect(page.getByTestId("signed-in-user")).toHaveCount(0);

  await page.getByRole("link", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/login$/);
  await hydrated(page, testInfo);
  await page.getByLabel("Email").fill(email.toUpperCase());
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/billing$/);
  await expect(page.getByTestId("signed-in-user")).toHaveText(email);

  expect(errors).toEqual([]);
});

test("a wrong password is refused with a message that reveals nothing", async ({ page }, testInfo) => {
  const email = uniqueEmail(testInfo);
  await page.request.post("/api/signup", { form: { email, password: PASSWORD }, maxRedirects: 0 });
  await page.context().clearCookies();

  await open(page, testInfo, "/login");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("not my password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("That email and password don't match an account.");
  await expect(page.getByTestId("signed-in-user")).toHaveCount(0);

  // An unknown address gets exactly the same answer.
  await open(page, testInfo, "/login");
  await page.getByLabel("Email").fill(uniqueEmail(testInfo, "nobody"));
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("That email and password don't match an account.");
});

test("a second account for the same email is refused on the email field", async ({ page }, testInfo) => {
  const email = uniqueEmail(testInfo);
  await page.request.post("/api/signup", { form: { email, password: PASSWORD }, maxRedirects: 0 });
  await page.context().clearCookies();

  await open(page, testInfo, "/signup");
  await page.getByLabel("Email").fill(email.toUpperCase());
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  const field = page.getByLabel("Email");
  await expect(field).toHaveAttribute("aria-invalid", "true");
  await expect(page.getByText("An account with this email already exists. Sign in instead.")).toBeVisible();
  await expect(page.getByTestId("signed-in-user")).toHaveCount(0);
});

test("signing in from a protected page returns to it", async ({ page }, testInfo) => {
  const email = uniqueEmail(testInfo);
  await page.request.post("/api/signup", { form: { email, password: PASSWORD }, maxRedirects: 0 });
  await page.context().clearCookies();

  await page.goto("/settings/billing");
  await expect(page).toHaveURL(/\/login\?next=%2Fsettings%2Fbilling$/);
  await hydrated(page, testInfo);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/settings\/billing$/);
  await expect(page.getByRole("heading", { name: "Billing settings" })).toBeVisible();
});

test("a sign-in link cannot send the browser to another site", async ({ page, baseURL }, testInfo) => {
  const email = uniqueEmail(testInfo);
  await page.request.post("/api/signup", { form: { email, password: PASSWORD }, maxRedirects: 0 });
  await page.context().clearCookies();
  const origin = new URL(baseURL!).origin;
  // `/%09/evil.example` and `/%09%5Cevil.example`: a browser drops the tab and reads `\` as `/`.
  for (const next of ["/%09/evil.example", "/%09%5Cevil.example", "/%5Cevil.example"]) {
    await page.context().clearCookies();
    await open(page, testInfo, `/login?next=${next}`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page).toHaveURL(/\/billing$/);
    expect(new URL(page.url()).origin).toBe(origin);
  }
});
