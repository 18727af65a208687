import { test, expect } from "@playwright/test";
import { open, watchConsole } from "./helpers";

test("client-side navigation keeps the page hydrated and marks the current link", async ({ page }, testInfo) => {
  const errors = watchConsole(page);
  await open(page, testInfo, "/");
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Pricing" }).click();
  await expect(page).toHaveURL(/\/pricing$/);
  await expect(page.getByRole("heading", { level: 1, name: "Simple plans, credits that add up" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Pricing" })).toHaveAttribute("aria-current", "page");
  expect(errors).toEqual([]);
});
