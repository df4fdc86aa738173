// The driver behind ops/scripts/browser.sh: see there.
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

// The flags this machine needs: no sandbox as root, and no background
// traffic (updates, sync, QUIC probes) to hosts the network refuses.
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function main(url, scriptPath, ...args) {
  const script = require(path.resolve(scriptPath));
  const origin = new URL(url).origin;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "agora-chromium-"));
  const seen = { console: [], errors: [], requests: [], refused: [], violations: [] };
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.AGORA_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
  });
  try {
    await context.route("**/*", (route) => {
      const target = route.request().url();
      if (target.startsWith("data:") || target.startsWith("blob:") || new URL(target).origin === origin) {
        return route.continue();
      }
      seen.refused.push(target);
      return route.abort("blockedbyclient");
    });
    // CSP violations are events in the page; collect them before any script runs.
    await context.addInitScript(() => {
      window.__violations = [];
      document.addEventListener("securitypolicyviolation", (e) =>
        window.__violations.push({
          directive: e.effectiveDirective,
          blocked: e.blockedURI,
          source: e.sourceFile,
          sample: e.sample,
        }),
      );
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => seen.console.push({ type: m.type(), text: m.text() }));
    page.on("pageerror", (e) => seen.errors.push(String(e)));
    page.on("request", (r) => seen.requests.push(r.url()));
    const response = await page.goto(url, { waitUntil: "load", timeout: 30000 });
    seen.status = response ? response.status() : null;
    seen.headers = response ? await response.allHeaders() : {};
    let result;
    let failure = null;
    try {
      result = await script(page, args);
    } catch (err) {
      failure = String(err && err.stack ? err.stack : err);
    }
    seen.violations = await page.evaluate(() => window.__violations).catch(() => []);
    // To look at what the page showed: AGORA_SCREENSHOT=page.png.
    if (process.env.AGORA_SCREENSHOT) await page.screenshot({ path: process.env.AGORA_SCREENSHOT });
    console.log(JSON.stringify({ result, failure, ...seen }));
    if (failure) process.exitCode = 1;
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main(...process.argv.slice(2)).catch((err) => {
  console.error(err);
  process.exit(2);
});
