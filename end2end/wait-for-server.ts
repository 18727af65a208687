// Waits until the app answers /healthz, so the tests never race its start-up.
export default async function globalSetup() {
  const url = `${process.env.BASE_URL ?? "http://127.0.0.1:3000"}/healthz`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`app at ${url} not ready after 60 s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
