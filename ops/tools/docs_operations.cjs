// A page script for ops/scripts/browser.sh: waits until the API reference
// has rendered its document, and returns the page's text, so the caller
// can look for every operation in it. args: [timeout in ms].
module.exports = async (page, [timeout = "30000"]) => {
  await page.waitForFunction(
    () => document.querySelectorAll("#app *").length > 100 && document.body.innerText.length > 1000,
    null,
    { timeout: Number(timeout) },
  );
  return { text: await page.evaluate(() => document.body.innerText) };
};
