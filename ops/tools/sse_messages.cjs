// A page script for ops/scripts/browser.sh: opens the browser's own
// EventSource on a path of the page's origin and returns the messages it
// dispatches ({id: lastEventId, event, data}) up to the one whose id is
// `until`, so a test sees the stream as a storefront's script would.
// args: [path, until, timeout in ms].
module.exports = async (page, [path, until, timeout = "30000"]) =>
  page.evaluate(
    ({ path, count, timeout }) =>
      new Promise((resolve, reject) => {
        const source = new EventSource(path);
        const got = [];
        const timer = setTimeout(() => {
          source.close();
          reject(new Error(`no message ${until} in ${timeout} ms: ${JSON.stringify(got)}`));
        }, timeout);
        const take = (e) => {
          got.push({ id: e.lastEventId, event: e.type, data: JSON.parse(e.data) });
          if (e.lastEventId === until) {
            clearTimeout(timer);
            source.close();
            resolve(got);
          }
        };
        for (const kind of ["order", "product", "cart", "notification"]) source.addEventListener(kind, take);
      }),
    { path, until, timeout: Number(timeout) },
  );
