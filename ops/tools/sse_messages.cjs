// A page script for ops/scripts/browser.sh: opens the browser's own
// EventSource on a path of the page's origin and returns the messages it
// dispatches ({id: lastEventId, event, data}) up to the first whose data
// has `field` equal to `value` (as text), so a test sees the stream as a
// storefront's script would. args: [path, field, value, timeout in ms].
module.exports = async (page, [path, field, value, timeout = "30000"]) =>
  page.evaluate(
    ({ path, field, value, timeout }) =>
      new Promise((resolve, reject) => {
        const source = new EventSource(path);
        const got = [];
        const timer = setTimeout(() => {
          source.close();
          reject(new Error(`no message with ${field} = ${value} in ${timeout} ms: ${JSON.stringify(got)}`));
        }, timeout);
        const take = (e) => {
          got.push({ id: e.lastEventId, event: e.type, data: JSON.parse(e.data) });
          if (String(got[got.length - 1].data[field]) === value) {
            clearTimeout(timer);
            source.close();
            resolve(got);
          }
        };
        for (const kind of ["order", "product", "cart", "notification"]) source.addEventListener(kind, take);
      }),
    { path, field, value, timeout: Number(timeout) },
  );
