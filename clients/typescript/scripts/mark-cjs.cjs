// The package is "type": "module"; dist/cjs holds the CommonJS build, and this
// package.json inside it tells Node (and TypeScript) to load its .js files as
// CommonJS.
const fs = require("node:fs");
const path = require("node:path");

fs.writeFileSync(path.join(__dirname, "..", "dist", "cjs", "package.json"), '{ "type": "commonjs" }\n');
