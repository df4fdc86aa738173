#!/usr/bin/env bash
# Re-vendors the API reference's browser bundle (Scalar's standalone build)
# from the npm registry into api/assets/scalar/, which the binary embeds and
# serves at /docs/scalar.js, so /docs needs no network beyond the server:
#
#   ops/scripts/vendor-scalar.sh            # the pinned version below
#   ops/scripts/vendor-scalar.sh 1.77.0     # another; then update VERSION here
#
# Checks the tarball against the registry's integrity hash, keeps the
# bundle as is plus a gzip of it (served to clients that accept gzip), and
# writes the licence and where it all came from.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
VERSION=${1:-1.76.0}
package="@scalar/api-reference"
out="$root/api/assets/scalar"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack "$package@$VERSION" --silent >/dev/null)
tarball=$(ls "$work"/*.tgz)
expected=$(npm view "$package@$VERSION" dist.integrity)
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$expected" != "$actual" ]; then
    echo "vendor-scalar.sh: $tarball does not match the registry's integrity $expected" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work"
license=$(node -p "require('$work/package/package.json').license")
if [ "$license" != "MIT" ]; then
    echo "vendor-scalar.sh: $package $VERSION is licensed $license, not MIT: review before vendoring" >&2
    exit 1
fi

mkdir -p "$out"
cp "$work/package/dist/browser/standalone.js" "$out/standalone.js"
gzip -9 -n -c "$out/standalone.js" >"$out/standalone.js.gz"
echo "$VERSION" >"$out/VERSION"
if [ -f "$work/package/LICENSE" ]; then
    cp "$work/package/LICENSE" "$out/LICENSE"
else
    # The package declares MIT but ships no licence file; this is the MIT
    # licence with the copyright line of Scalar's repository.
    cat >"$out/LICENSE" <<'LICENSE'
MIT License

Copyright (c) 2023-present Scalar

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
LICENSE
fi
cat >"$out/README.md" <<README
# Vendored: $package $VERSION

\`standalone.js\` is \`dist/browser/standalone.js\` of the npm package
\`$package@$VERSION\` (tarball integrity \`$expected\`), unchanged;
\`standalone.js.gz\` is the same file compressed with \`gzip -9 -n\`.
Licence: $license (\`LICENSE\`); the bundle keeps the licence comments of the
libraries inside it. Agora serves it at \`/docs/scalar.js\`
(\`api/src/routes/documents.rs\`). Re-vendor with \`ops/scripts/vendor-scalar.sh\`.
README
echo "vendor-scalar.sh: $package $VERSION in $out" >&2
