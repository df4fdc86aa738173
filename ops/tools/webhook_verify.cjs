// Verifies webhook deliveries with the Standard Webhooks project's own
// library (the `standardwebhooks` npm package), as a receiver would.
//
//   node webhook_verify.cjs DELIVERIES.json
//
// DELIVERIES.json: [{"secret": "whsec_...", "headers": {"webhook-id": ...,
// "webhook-timestamp": ..., "webhook-signature": ...}, "body": "<raw body>"}].
// Prints one JSON line per delivery ({index, ok, error?}) and exits 1 if any
// fails to verify.
const fs = require("node:fs");
const { Webhook } = require("standardwebhooks");

const deliveries = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
let failed = 0;
deliveries.forEach((d, index) => {
  try {
    new Webhook(d.secret).verify(d.body, d.headers);
    console.log(JSON.stringify({ index, ok: true }));
  } catch (err) {
    failed += 1;
    console.log(JSON.stringify({ index, ok: false, error: String(err && err.message || err) }));
  }
});
if (failed > 0) {
  console.error(`webhook_verify: ${failed} of ${deliveries.length} deliveries failed to verify`);
  process.exit(1);
}
