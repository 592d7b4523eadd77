// Build ui/dist/: the page's own files plus lightweight-charts' standalone ES module, so the
// gateway serves everything locally (no CDN). No bundler: the page is plain ES modules.
import { copyFileSync, mkdirSync, rmSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const require = createRequire(import.meta.url);

const chartsPackage = dirname(require.resolve('lightweight-charts/package.json'));
const chartsVersion = JSON.parse(readFileSync(join(chartsPackage, 'package.json'), 'utf8')).version;
const chartsModule = join(chartsPackage, 'dist', 'lightweight-charts.standalone.production.mjs');
if (!existsSync(chartsModule)) throw new Error(`missing ${chartsModule}: run npm ci in ui/`);

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, 'vendor'), { recursive: true });
for (const file of ['index.html', 'app.js', 'style.css']) copyFileSync(join(here, file), join(dist, file));
copyFileSync(chartsModule, join(dist, 'vendor', 'lightweight-charts.mjs'));
copyFileSync(join(chartsPackage, 'LICENSE'), join(dist, 'vendor', 'lightweight-charts.LICENSE'));
writeFileSync(join(dist, 'build.json'), `${JSON.stringify({ 'lightweight-charts': chartsVersion }, null, 1)}\n`);
console.log(`ui: built ${dist} (lightweight-charts ${chartsVersion})`);
