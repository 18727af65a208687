// Contract tests: Polar's official TypeScript SDK (@polar-sh/sdk 0.47.x, which validates every
// response and webhook payload with its zod schemas) pointed at the app's built-in stand-in.
// Every endpoint Tally uses must parse, and every webhook the stand-in sends under Polar's
// legacy key scheme must pass `validateEvent`, except the event types this SDK version does not
// know (it rejects those by name, as it would from Polar).
import { test, expect } from "@playwright/test";
import { Polar } from "@polar-sh/sdk";
import { validateEvent } from "@polar-sh/sdk/webhooks";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { controlsAuth } from "./helpers";

const TOKEN = process.env.POLAR_ACCESS_TOKEN ?? "standin_e2e_token";
const LEGACY_SECRET = "polar_whs_contract-test-secret";
/** Types Polar sends that @polar-sh/sdk 0.47.1 predates (docs/polar-contract.md §3.2). */
const UNKNOWN_TO_SDK_0_47 = new Set(["subscription.cycled", "subscription.paused", "subscription.resumed", "subscription.migrated"]);

type Delivery = { headers: Record<string, string>; body: string };

async function webhookSink(): Promise<{ url: string; deliveries: Delivery[]; close: () => void }> {
  const deliveries: Delivery[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      deliveries.push({ headers: req.headers as Record<string, string>, body });
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hook`, deliveries, close: () => server.close() };
}

async function collect<T>(pages: AsyncIterable<{ result: { items: T[] } }>): Promise<T[]> {
  const out: T[] = [];
  for await (const page of pages) out.push(...page.result.items);
  return out;
}

test("the official SDK parses every stand-in endpoint and accepts its webhooks", async ({ request, baseURL }, testInfo) => {
  test.skip(testInfo.project.name !== "hydrated", "Node-only contract test; runs once");
  test.setTimeout(120_000);
  const sink = await webhookSink();
  const reg = await request.post("/polar/_standin/webhooks/endpoints", { data: { url: sink.url, secret: LEGACY_SECRET, standard: false }, headers: controlsAuth() });
  expect(reg.status()).toBe(201);
  const ids = await (await request.get("/polar/_standin/products", { headers: controlsAuth() })).json();

  const polar = new Polar({ accessToken: TOKEN, serverURL: `${baseURL}/polar` });
  const external = `contract-${Date.now()}`;

  // Products (paginated iterator).
  const products = await collect(await polar.products.list({ limit: 2 }));
  expect(products.map((p) => p.id).sort()).toEqual(Object.values(ids).sort());
  expect(products.find((p) => p.id === ids.pro)!.benefits[0].metadata).toMatchObject({ slug: "pro" });

  // Customers by external id.
  const created = await polar.customers.create({ email: `${external}@example.com`, externalId: external, name: "Contract Test" });
  expect(created.externalId).toBe(external);
  expect((await polar.customers.getExternal({ externalId: external })).id).toBe(created.id);
  const updated = await polar.customers.updateExternal({
    externalId: external,
    customerUpdateExternalID: { billingAddress: { country: "DE", line1: "Unter den Linden 1", city: "Berlin", postalCode: "10117" }, taxId: "DE123456789" },
  });
  expect(updated.taxId).toEqual(["DE123456789", "eu_vat"]);

  // Checkout, paid on the hosted page.
  const checkout = await polar.checkouts.create({
    products: [ids.pro],
    externalCustomerId: external,
    successUrl: `${baseURL}/billing/success?checkout_id={CHECKOUT_ID}`,
  });
  expect(checkout.status).toBe("open");
  expect(checkout.successUrl).toContain(checkout.id);
  const paid = await request.post(`${checkout.url}/confirm`, {
    form: { email: `${external}@example.com`, billing_name: "Contract GmbH", country: "DE", line1: "Unter den Linden 1", postal_code: "10117", city: "Berlin", card: "4242 4242 4242 4242" },
    maxRedirects: 0,
  });
  expect(paid.status()).toBe(303);
  expect((await polar.checkouts.get({ id: checkout.id })).status).toBe("succeeded");

  // Customer State, customer session, orders and invoices.
  // Customer State lags a few seconds behind, as Polar's does.
  await expect.poll(async () => (await polar.customers.getStateExternal({ externalId: external })).grantedBenefits.map((g) => g.benefitMetadata["slug"]), { timeout: 15_000 }).toContain("pro");
  const state = await polar.customers.getStateExternal({ externalId: external });
  expect(state.activeSubscriptions[0].status).toBe("active");
  const session = await polar.customerSessions.create({ externalCustomerId: external });
  expect(session.customerPortalUrl).toContain("customer_session_token=");
  const orders = await collect(await polar.orders.list({ externalCustomerId: external }));
  expect(orders).toHaveLength(1);
  expect((await polar.orders.get({ id: orders[0].id })).billingReason).toBe("subscription_create");
  expect(await polar.orders.generateInvoice({ id: orders[0].id })).toBeFalsy();
  await expect.poll(async () => (await polar.orders.invoice({ id: orders[0].id }).catch(() => null))?.url ?? null, { timeout: 10_000 }).toContain("/_files/invoices/");

  // Subscriptions: list, get, cancel, uncancel, switch product, revoke.
  const subs = await collect(await polar.subscriptions.list({ externalCustomerId: external }));
  expect(subs).toHaveLength(1);
  const subId = subs[0].id;
  expect((await polar.subscriptions.get({ id: subId })).productId).toBe(ids.pro);
  expect((await polar.subscriptions.update({ id: subId, subscriptionUpdate: { cancelAtPeriodEnd: true } })).cancelAtPeriodEnd).toBe(true);
  expect((await polar.subscriptions.update({ id: subId, subscriptionUpdate: { cancelAtPeriodEnd: false } })).cancelAtPeriodEnd).toBe(false);
  const switched = await polar.subscriptions.update({ id: subId, subscriptionUpdate: { productId: ids.business, prorationBehavior: "invoice" } });
  expect(switched.productId).toBe(ids.business);
  // A renewal (subscription.cycled is newer than this SDK), then the end.
  expect((await request.post(`/polar/_standin/subscriptions/${subId}/renew`, { headers: controlsAuth() })).status()).toBe(200);
  expect((await polar.subscriptions.revoke({ id: subId })).status).toBe("canceled");

  // Usage events and meters.
  const ingested = await polar.events.ingest({ events: [{ name: "text.stats", externalCustomerId: external, externalId: `${external}-1` }] });
  expect(ingested).toMatchObject({ inserted: 1, duplicates: 0 });
  expect((await polar.events.ingest({ events: [{ name: "text.stats", externalCustomerId: external, externalId: `${external}-1` }] })).duplicates).toBe(1);
  // Tally's usage events (credits.spent, summed by metadata.credits) make the customer's meter.
  await polar.events.ingest({ events: [{ name: "credits.spent", externalCustomerId: external, externalId: `${external}-spend`, metadata: { credits: 7 } }] });
  // Recomputed behind, as Polar's are (POLAR_STANDIN_STATE_LAG_MS).
  const meter = async () => (await collect(await polar.customerMeters.list({ externalCustomerId: external })))[0];
  await expect.poll(async () => (await meter())?.consumedUnits, { timeout: 15_000 }).toBe(7);
  const meters = await collect(await polar.customerMeters.list({ externalCustomerId: external }));
  expect(meters).toHaveLength(1);
  expect(meters[0]).toMatchObject({ consumedUnits: 7, creditedUnits: 0, balance: -7 });
  expect(meters[0].meter).toMatchObject({ name: "API credits", unit: "scalar" });

  // A pack bought and refunded.
  const pack = await polar.checkouts.create({ products: [ids.pack_50], externalCustomerId: external });
  await request.post(`${pack.url}/confirm`, { form: { email: `${external}@example.com`, billing_name: "Contract GmbH", country: "DE", card: "4242424242424242" }, maxRedirects: 0 });
  const packOrder = (await collect(await polar.orders.list({ externalCustomerId: external, productBillingType: "one_time" })))[0];
  expect((await polar.refunds.create({ orderId: packOrder.id, reason: "customer_request", amount: packOrder.netAmount })).status).toBe("succeeded");

  // Errors in Polar's shapes map to the SDK's typed errors.
  await expect(polar.checkouts.get({ id: "00000000-0000-4000-8000-000000000000" })).rejects.toMatchObject({ name: "ResourceNotFound" });
  await expect(polar.checkouts.create({ products: [] })).rejects.toMatchObject({ name: "HTTPValidationError" });
  await expect(new Polar({ accessToken: "wrong", serverURL: `${baseURL}/polar` }).products.list({})).rejects.toMatchObject({ statusCode: 401 });

  // Finally the customer is deleted (and anonymized).
  await polar.customers.deleteExternal({ externalId: external, anonymize: true });
  await expect(polar.customers.getExternal({ externalId: external })).rejects.toMatchObject({ name: "ResourceNotFound" });

  // Webhooks: every delivery so far, validated by the SDK under the legacy scheme.
  await expect.poll(() => sink.deliveries.map((d) => JSON.parse(d.body).type), { timeout: 20_000 }).toContain("customer.deleted");
  const seen = new Set<string>();
  const rejectedUnknown = new Set<string>();
  for (const d of sink.deliveries) {
    const type = JSON.parse(d.body).type as string;
    try {
      const event = validateEvent(d.body, d.headers, LEGACY_SECRET);
      expect(event.type).toBe(type);
      seen.add(type);
    } catch (e) {
      const err = e as Error & { cause?: unknown };
      if (!UNKNOWN_TO_SDK_0_47.has(type)) {
        throw new Error(`SDK rejected ${type}: ${err.message} ${JSON.stringify(err.cause ?? "").slice(0, 2000)}`);
      }
      rejectedUnknown.add(type);
    }
  }
  for (const t of [
    "checkout.created", "checkout.updated", "customer.created", "customer.updated", "customer.deleted", "customer.state_changed",
    "order.created", "order.updated", "order.paid", "order.refunded", "refund.created", "refund.updated",
    "subscription.created", "subscription.active", "subscription.updated", "subscription.canceled", "subscription.uncanceled", "subscription.revoked",
    "benefit_grant.created", "benefit_grant.revoked", "benefit_grant.cycled",
  ]) {
    expect(seen, `validated ${t}`).toContain(t);
  }
  expect([...rejectedUnknown]).toEqual(["subscription.cycled"]);
  // A wrong secret is refused.
  expect(() => validateEvent(sink.deliveries[0].body, sink.deliveries[0].headers, "polar_whs_wrong")).toThrow(/No matching signature/);
  sink.close();
});
