// Validates an AsyncAPI document with the AsyncAPI project's own parser
// (@asyncapi/parser, with its default rules), as a consumer's tooling would.
//
//   node asyncapi_validate.cjs DOCUMENT.json
//
// Prints every diagnostic as a JSON line ({severity, code, message, path})
// and exits 1 if there is any error or warning (severity 0 or 1), 0 else.
const fs = require("node:fs");
const { Parser } = require("@asyncapi/parser");

const SEVERITY = ["error", "warning", "information", "hint"];

async function main(file) {
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(fs.readFileSync(file, "utf8"));
  for (const d of diagnostics) {
    console.log(
      JSON.stringify({
        severity: SEVERITY[d.severity] ?? d.severity,
        code: d.code,
        message: d.message,
        path: d.path.join("/"),
      }),
    );
  }
  const bad = diagnostics.filter((d) => d.severity <= 1);
  if (!document || bad.length > 0) {
    console.error(`asyncapi_validate: ${bad.length} errors or warnings${document ? "" : ", no document"}`);
    process.exit(1);
  }
  console.error(
    `asyncapi_validate: ok, ${document.channels().length} channels, ${document.messages().length} messages`,
  );
}

main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(2);
});
