// The dashboard's figures in a real Chromium, run by `cargo bench --bench e2e -- dashboard`
// (benches/e2e.rs starts the daemon and the agents and passes them in the environment).
// Prints one JSON line of figures on stdout; progress goes to stderr.
//   page weight: bytes transferred for the first load (login link -> live dashboard);
//   click to first frame: from the click on an agent's "Terminal" button to the first
//     animation frame that shows its screen, for each of 8 agents;
//   a tab with 8 live terminals while one floods: the renderer's memory (RSS of Chromium's
//     renderer processes, and the JS heap), the longest gap between animation frames, and
//     whether the page skipped ahead with a notice.
import fs from 'node:fs';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const LINK = env('LOGIN_LINK');
const SESSIONS = env('SESSIONS').split(',');
const FLOOD = env('FLOOD_SESSION');
const { chromium } = await import(path.join(env('PLAYWRIGHT_MODULES'), 'playwright-core', 'index.mjs'));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

/** RSS (KiB) of Chromium's renderer processes, read from /proc. */
function rendererRssKb() {
  let total = 0;
  for (const pid of fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmdline.includes('--type=renderer')) continue;
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      total += Number((status.match(/VmRSS:\s+(\d+)/) || [0, 0])[1]);
    } catch { /* gone */ }
  }
  return total;
}

try {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(120000);
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Performance.enable');
  let transferred = 0;
  let decoded = 0;
  let requests = 0;
  cdp.on('Network.loadingFinished', (event) => { transferred += event.encodedDataLength; requests += 1; });
  cdp.on('Network.dataReceived', (event) => { decoded += event.dataLength; });

  console.error('first load');
  await page.goto(LINK);
  await page.waitForSelector('#link-state[data-state="live"]');
  await page.waitForSelector(`.agent[data-session="${SESSIONS[SESSIONS.length - 1]}"]`);
  const weight = { transferred_kb: transferred / 1024, decoded_kb: decoded / 1024, requests };

  console.error('click to first frame, 8 terminals');
  const clicks = [];
  for (const session of SESSIONS) {
    await page.click('#tabs [data-view=agents]');
    const ms = await page.evaluate(async (session) => {
      const started = performance.now();
      document.querySelector(`.agent[data-session="${session}"] .open`).click();
      await new Promise((resolve) => {
        const check = () => {
          const rows = document.querySelector(`.panel[data-session="${session}"] .xterm-rows`);
          if (rows && rows.textContent.includes('ready')) resolve();
          else requestAnimationFrame(check);
        };
        check();
      });
      return performance.now() - started;
    }, session);
    clicks.push(ms);
  }

  console.error('flood one of 8 live terminals');
  await page.click('#tabs [data-view=terminals]');
  const heapBefore = (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'JSHeapUsedSize').value;
  const rssBefore = rendererRssKb();
  // Frame gaps, measured in the page for the whole flood.
  await page.evaluate(() => {
    window.benchFrames = { last: performance.now(), longest: 0, count: 0, running: true };
    const tick = (now) => {
      const f = window.benchFrames;
      f.longest = Math.max(f.longest, now - f.last);
      f.last = now;
      f.count += 1;
      if (f.running) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  let rssPeak = rssBefore;
  const sampler = setInterval(() => { rssPeak = Math.max(rssPeak, rendererRssKb()); }, 200);
  const started = Date.now();
  await page.locator(`.panel[data-session="${FLOOD}"] .term`).click();
  await page.keyboard.press('Enter');
  await page.waitForFunction((session) => {
    const rows = document.querySelector(`.panel[data-session="${session}"] .xterm-rows`);
    return rows && rows.innerText.split('\n').some((line) => line.trim() === 'END');
  }, FLOOD, { polling: 100 });
  const floodSeconds = (Date.now() - started) / 1000;
  clearInterval(sampler);
  const frames = await page.evaluate(() => { window.benchFrames.running = false; return window.benchFrames; });
  const skipped = await page.locator(`.panel[data-session="${FLOOD}"] .notice`).isVisible();
  const heapAfter = (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'JSHeapUsedSize').value;
  const rssAfter = rendererRssKb();
  await page.screenshot({ path: path.join(process.env.SHOTS || '.', 'dashboard-8-terminals.png') });
  clicks.sort((a, b) => a - b);
  console.log(JSON.stringify({
    weight,
    click_ms: { min: clicks[0], median: clicks[Math.floor(clicks.length / 2)], max: clicks[clicks.length - 1] },
    flood: {
      seconds: floodSeconds,
      longest_frame_ms: frames.longest,
      frames: frames.count,
      skipped_ahead: skipped,
      renderer_rss_kb: { before: rssBefore, peak: rssPeak, after: rssAfter },
      js_heap_mb: { before: heapBefore / 1e6, after: heapAfter / 1e6 },
    },
  }));
} finally {
  await browser.close();
}
