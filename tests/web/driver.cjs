// A tiny remote control for a real headless Chromium, for tests/web.rs.
//
// Reads one JSON command per line on stdin, answers one JSON line on stdout:
// {"ok": true, "value": ...} or {"ok": false, "error": "..."}. The browser is
// Debian's chromium (CHROMIUM, default /usr/bin/chromium), driven through
// playwright-core (PLAYWRIGHT_CORE: the path of its installed package).
'use strict';
const readline = require('node:readline');
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

async function main() {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // As root, Chromium's sandbox cannot start; the pages are our own.
    args: (root ? ['--no-sandbox'] : []).concat(['--disable-gpu', '--disable-dev-shm-usage']),
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 860 } });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  page.on('pageerror', (e) => problems.push('pageerror: ' + e.message));
  const ops = {
    async goto(c) {
      const res = await page.goto(c.url, { waitUntil: 'load' });
      return { status: res ? res.status() : 0, url: page.url() };
    },
    async fill(c) { await page.fill(c.selector, c.value); },
    async click(c) { await page.click(c.selector, { timeout: c.timeout || 10000 }); },
    async clickAt(c) { await page.mouse.click(c.x, c.y); },
    async eval(c) { return page.evaluate(`(async () => { ${c.js} })()`); },
    async wait(c) {
      // Polled from here: the page's CSP (no eval) forbids waitForFunction's
      // own polling, and the CSP is what is under test.
      const deadline = Date.now() + (c.timeout || 15000);
      for (;;) {
        const value = await page.evaluate(`(async () => { ${c.js} })()`).catch((e) => {
          if (String(e).includes('Execution context was destroyed')) return null;
          throw e;
        });
        if (value) return value;
        if (Date.now() > deadline) throw new Error('timed out; last value ' + JSON.stringify(value));
        await new Promise((ok) => setTimeout(ok, 100));
      }
    },
    async waitForUrl(c) { await page.waitForURL(c.url, { timeout: c.timeout || 15000 }); return page.url(); },
    async screenshot(c) { await page.screenshot({ path: c.path, fullPage: false }); return c.path; },
    async cookies() { return context.cookies(); },
    async serveAt(c) {
      // Pages of another origin (an attacker's site) served by the browser itself.
      await page.route(c.url, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: c.html }));
    },
    async problems() { return problems.splice(0); },
    async url() { return page.url(); },
  };
  process.stdout.write(JSON.stringify({ ok: true, value: 'ready' }) + '\n');
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let reply;
    try {
      const c = JSON.parse(line);
      if (c.op === 'close') break;
      const op = ops[c.op];
      if (!op) throw new Error('unknown op ' + c.op);
      const value = await op(c);
      reply = { ok: true, value: value === undefined ? null : value };
    } catch (e) {
      reply = { ok: false, error: String(e && e.stack ? e.stack : e) };
    }
    process.stdout.write(JSON.stringify(reply) + '\n');
  }
  await browser.close();
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }) + '\n');
  process.exit(1);
});
