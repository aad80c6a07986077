// Signs in to a running controller's web view and saves a screenshot of the
// graph: how docs/graph.png is made from the demo.
//   node tests/web/screenshot.cjs http://127.0.0.1:8480 <token> docs/graph.png
// PLAYWRIGHT_CORE: the installed playwright-core package (target/web-node).
'use strict';
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

async function main() {
  const [base, token, out] = process.argv.slice(2);
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: root ? ['--no-sandbox'] : [],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 820 } });
  await page.goto(base + '/');
  await page.fill('#token', token);
  await page.click('#sign-in');
  await page.waitForURL(base + '/');
  for (let i = 0; i < 100; i++) {
    if (await page.evaluate('!!(window.vigil && window.vigil.state.renders > 0 && window.vigil.cy().edges(".violation").length)')) break;
    await page.waitForTimeout(100);
  }
  // Open the miner's details: what it called, in red.
  await page.evaluate(`(() => {
    const v = window.vigil;
    const miner = v.cy().nodes().filter((n) => n.data('label') === (process_env_select || 'xmrig-miner'));
    if (miner.nonempty()) v.select(miner.id());
  })()`.replace('process_env_select', JSON.stringify(process.env.SELECT || '')));
  await page.waitForTimeout(300);
  await page.screenshot({ path: out });
  await browser.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
