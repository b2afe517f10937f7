// The status page in Debian's chromium, driven by playwright-core. Run by
// tests/browser/status_page.sh, which makes the offices and passes, in the
// environment: CASEMESH_BIN, PHILA_DATA (phila-da's data directory, whose
// admin certificate `--data` uses), STATUS_URL, REFRESH_SECS, CLIENT_CERT
// and CLIENT_KEY (an auditor's), CLIENT_P12 and CLIENT_P12_PASSPHRASE
// (another auditor's, as a PKCS#12 file), CHROMIUM, BROWSER_TEST_MODULES
// (where playwright-core is installed) and SCREENSHOT.
//
// Checks, each wait bounded: (a) without a client certificate the page is
// refused; (b) with the auditor's it loads and shows nyc-da connected;
// (c) a grant made and then revoked with the CLI shows on the page at its
// next automatic refresh, the test never reloading it; (d) a full-page
// screenshot; (e) with JavaScript disabled the tables are all there;
// (f) the .p12 of `user issue --p12` works in the browser as PEM files do.
// On a failure it prints what the page showed and exits 1.

import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`status_page.mjs: ${name} is not set (run tests/browser/status_page.sh)`);
    process.exit(2);
  }
  return v;
}

const require = createRequire(path.join(env('BROWSER_TEST_MODULES'), 'package.json'));
const { chromium } = require('playwright-core');

const bin = env('CASEMESH_BIN');
const phila = env('PHILA_DATA');
const url = env('STATUS_URL');
const origin = new URL(url).origin;
const refreshMs = Number(env('REFRESH_SECS')) * 1000;
const certPath = env('CLIENT_CERT');
const keyPath = env('CLIENT_KEY');
const screenshot = env('SCREENSHOT');

// The flags chromium needs on a machine with no network but loopback: no
// background connections, no component or sync traffic, no QUIC. Playwright
// gives every launch a new empty profile (--user-data-dir) of its own.
const args = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // And no name resolves: nothing but the literal 127.0.0.1 is reachable.
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
];

class Failure extends Error {}

let current = null; // the page whose text a failure prints
const started = Date.now();
const t = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const ok = (msg) => console.log(`ok   ${msg} (${t()})`);

function fail(msg) {
  throw new Failure(msg);
}

// Polls `probe` (which returns a value, or null to go on waiting; errors
// while the page reloads count as "not yet") until `ms` have passed.
async function waitFor(what, ms, probe) {
  const deadline = Date.now() + ms;
  let last = null;
  for (;;) {
    try {
      const v = await probe();
      if (v !== null && v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      fail(`waited ${ms / 1000} s for ${what}${last ? ` (last error: ${last.message.split('\n')[0]})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The words of the first state badge (`.st`) in a row's cell `n` (from 1),
// or null if there is no such row.
async function state(page, rowSelector, n) {
  const badge = page.locator(`${rowSelector} > td:nth-child(${n}) .st`);
  if ((await badge.count()) === 0) return null;
  return (await badge.first().textContent()).trim();
}
const link = (page, office) => state(page, `tr.peer[data-office="${office}"]`, 2);
const grantState = (page, grant) => state(page, `tr.grant[data-grant="${grant}"]`, 5);

// Everything outside the page's own origin is refused and counted: nothing
// may leave 127.0.0.1.
const elsewhere = [];
async function onlyLoopback(context) {
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.origin === origin) return route.continue();
    elsewhere.push(u.href);
    return route.abort('blockedbyclient');
  });
}

function casemesh(...argv) {
  return execFileSync(bin, [...argv, '--data', phila], { encoding: 'utf8', timeout: 30_000 }).trim();
}

const withCert = (extra = {}) => ({
  ignoreHTTPSErrors: true, // the office CA is not a public one
  clientCertificates: [{ origin, certPath, keyPath }],
  viewport: { width: 1280, height: 900 },
  ...extra,
});

let browser;
try {
  browser = await chromium.launch({ executablePath: env('CHROMIUM'), args, timeout: 30_000 });
  console.log(`chromium ${browser.version()}`);

  // (a) No client certificate: the handshake is refused, every time. In
  // TLS 1.3 the client finishes its handshake before the server's
  // certificate_required alert arrives, so chromium names the failure
  // after whichever it noticed first: the alert, or the closed socket.
  // Not a refused connection (nothing listening), nor a timeout, nor the
  // server's certificate (ignored here as in (b), where the same page loads).
  {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    await onlyLoopback(context);
    const page = await context.newPage();
    current = page;
    const refusal =
      /net::ERR_(BAD_SSL_CLIENT_AUTH_CERT|SSL_PROTOCOL_ERROR|SOCKET_NOT_CONNECTED|CONNECTION_CLOSED|CONNECTION_RESET|CONNECTION_ABORTED|EMPTY_RESPONSE)\b/;
    const seen = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      let refused = null;
      try {
        const res = await page.goto(url, { timeout: 15_000 });
        fail(`without a client certificate the page answered ${res?.status()}`);
      } catch (e) {
        if (e instanceof Failure) throw e;
        refused = e.message.split('\n')[0];
      }
      if (!refusal.test(refused ?? '')) {
        fail(`without a client certificate: expected a refused TLS handshake, got: ${refused}`);
      }
      seen.push(refused.match(refusal)[0]);
    }
    ok(`without a client certificate the page is refused, 3 times of 3: ${seen.join(', ')}`);
    await context.close();
    current = null;
  }

  // (b) The auditor's certificate: the page, and nyc-da connected.
  const context = await browser.newContext(withCert());
  await onlyLoopback(context);
  const page = await context.newPage();
  current = page;
  // Every load of the page after the first is one the page asked for.
  let loads = 0;
  page.on('load', () => {
    loads += 1;
  });
  const res = await page.goto(url, { timeout: 15_000 });
  if (res.status() !== 200) fail(`with the auditor's certificate the page answered ${res.status()}`);
  const title = await page.title();
  if (title !== 'casemesh phila-da') fail(`title ${JSON.stringify(title)}`);
  const refresh = await page.locator('meta[http-equiv="refresh"]').getAttribute('content');
  if (Number(refresh) * 1000 !== refreshMs) fail(`meta refresh ${refresh}, configured ${refreshMs / 1000}`);
  ok(`with the auditor's certificate the page loads (HTTP 200, "${title}", refresh ${refresh} s)`);

  await waitFor('nyc-da to show as connected', 30_000, async () => (await link(page, 'nyc-da')) === 'connected');
  ok('nyc-da shows as connected');

  // (c) A grant made with the CLI shows at the next automatic refresh, …
  if ((await page.locator('tr.grant').count()) !== 0) fail('a grant is listed before any was made');
  const grantBudget = 3 * refreshMs;
  const loadsBefore = loads;
  let since = Date.now();
  const grant = casemesh('share', 'grant', '--peer', 'nyc-da', '--collection', '2026-0042');
  if (!/^g-\S+$/.test(grant)) fail(`share grant printed ${JSON.stringify(grant)}`);
  const row = `tr.grant[data-grant="${grant}"]`;
  await waitFor(`grant ${grant} to show as active`, grantBudget, async () =>
    (await grantState(page, grant)) === 'active');
  if (loads === loadsBefore) fail('the grant showed without the page reloading itself');
  const shownIn = Date.now() - since;
  ok(`grant ${grant} shows as active ${(shownIn / 1000).toFixed(1)} s after share grant, the page having reloaded itself ${loads - loadsBefore} time(s)`);
  const cells = await page.locator(row).locator('td').allTextContents();
  if (cells[1] !== 'nyc-da' || cells[2] !== 'collection 2026-0042') fail(`grant row ${JSON.stringify(cells)}`);

  // … and so does its revocation.
  since = Date.now();
  const revoked = casemesh('share', 'revoke', grant);
  if (!revoked.startsWith(`revoked ${grant}`)) fail(`share revoke printed ${JSON.stringify(revoked)}`);
  const ended = await waitFor(`grant ${grant} to show as purge pending or purged`, grantBudget, async () => {
    const s = await grantState(page, grant);
    return s === 'purge pending' || s === 'purged' ? s : null;
  });
  ok(`grant ${grant} shows as "${ended}" ${((Date.now() - since) / 1000).toFixed(1)} s after share revoke`);
  if (ended === 'purge pending') {
    // nyc-da confirms in a moment: the page shows it at a later refresh.
    await waitFor(`grant ${grant} to show as purged`, 30_000, async () => (await grantState(page, grant)) === 'purged');
    ok(`grant ${grant} shows as purged (nyc-da confirmed)`);
  }
  const confirmed = await page.locator(row).locator('td').last().textContent();
  if (!confirmed.includes('confirmed by nyc-da')) fail(`purged grant's state: ${confirmed}`);

  // (d) A screenshot, for a person to look at.
  await page.waitForLoadState('load');
  await page.screenshot({ path: screenshot, fullPage: true });
  ok(`screenshot: ${screenshot}`);
  await context.close();

  // (e) Without JavaScript: every table is there (the page has no script).
  {
    const context = await browser.newContext(withCert({ javaScriptEnabled: false }));
    await onlyLoopback(context);
    const page = await context.newPage();
    current = page;
    await page.goto(url, { timeout: 15_000 });
    const counts = {};
    for (const id of ['office', 'peers', 'grants', 'files', 'audit', 'entries']) {
      const rows = await page.locator(`h2#${id} + table tr`).count();
      if (rows < 1) fail(`without JavaScript, no table follows #${id}`);
      counts[id] = rows;
    }
    if ((await link(page, 'nyc-da')) !== 'connected') fail('without JavaScript, nyc-da is not shown as connected');
    if ((await grantState(page, grant)) !== 'purged') fail(`without JavaScript, grant ${grant} is not shown as purged`);
    const scripts = await page.locator('script').count();
    if (scripts !== 0) fail(`the page has ${scripts} script element(s)`);
    ok(`without JavaScript the tables render (rows: ${JSON.stringify(counts)})`);
    await context.close();
    current = null;
  }

  // (f) Another auditor's certificate as the PKCS#12 file a browser
  // imports (`user issue --p12`): the page loads, and the node logs the
  // view as that user's.
  {
    const pfxPath = env('CLIENT_P12');
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      clientCertificates: [{ origin, pfxPath, passphrase: env('CLIENT_P12_PASSPHRASE') }],
    });
    await onlyLoopback(context);
    const page = await context.newPage();
    current = page;
    const res = await page.goto(url, { timeout: 15_000 });
    if (res.status() !== 200) fail(`with the .p12 the page answered ${res.status()}`);
    // A view is logged after it is served: it shows from the next load on.
    const user = path.basename(pfxPath, '.p12');
    await waitFor(`a view by ${user} (auditor) in the latest audit entries`, 3 * refreshMs, async () => {
      const who = await page.locator('h2#entries + table tr > td:nth-child(3)').allTextContents();
      return who.includes(`${user} (auditor)`);
    });
    ok(`with ${path.basename(pfxPath)} (PKCS#12) the page loads, the view logged as ${user}'s`);
    await context.close();
    current = null;
  }

  if (elsewhere.length) fail(`the page asked for something beyond ${origin}: ${elsewhere.join(', ')}`);
  console.log(`status page: every check passed in ${t()}`);
} catch (e) {
  console.error(`\nFAILED: ${e instanceof Failure ? e.message : e.stack}`);
  if (current) {
    try {
      console.error(`\n--- the page (${current.url()}) showed:\n${await current.innerText('body', { timeout: 2_000 })}`);
    } catch (e2) {
      console.error(`(the page's text could not be read: ${e2.message.split('\n')[0]})`);
    }
  }
  process.exitCode = 1;
} finally {
  await browser?.close();
}
