// Starts the API reference (Scalar, vendored at /docs/scalar.js) on this
// server's own document, every group open. Default fonts, telemetry and the
// AI agent would reach other hosts, so they are off; the page's
// Content-Security-Policy would refuse them anyway.
Scalar.createApiReference("#app", {
  sources: [
    { title: "HTTP API", slug: "http", url: "/openapi.json", default: true },
    { title: "Events and webhooks", slug: "events", url: "/asyncapi.json" },
  ],
  defaultOpenAllTags: true,
  showDeveloperTools: "never",
  withDefaultFonts: false,
  telemetry: false,
  agent: { disabled: true },
});
