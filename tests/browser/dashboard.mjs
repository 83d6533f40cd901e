// The dashboard in a real Chromium, driven by playwright-core. Started by
// tests/it/browser.rs, which runs the daemon and answers this script's requests on stdin:
//   prints "@restart"            -> the test kills the daemon and starts it on the same port, answers "restarted"
//   prints "@permission SESSION" -> the test runs the agent's PermissionRequest hook, answers "started"
//   prints "@permission-answer"  -> the test checks what the hook was told, answers "ok"
//   prints "@link observe"       -> the test runs `orchestra open --scope observe`, answers the link
//   prints "@squat"              -> the test kills the daemon, lets another server take its port
//                                   until the page has asked it twice to prove itself, checks
//                                   that it got no cookie and no page key, restarts the daemon
//                                   on the port, answers "restored"
// Every step waits for what the page shows (no fixed sleeps); screenshots go to SHOTS.
import path from 'node:path';
import http from 'node:http';
import readline from 'node:readline';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env('DASHBOARD_URL');
const LINK_CONTROL = env('LOGIN_LINK_CONTROL');
const WORK = env('WORK_DIR');
const SHOTS = env('SHOTS');
const STEP_TIMEOUT = Number(process.env.STEP_TIMEOUT_MS || 30000);

const { chromium } = await import(path.join(env('PLAYWRIGHT_MODULES'), 'playwright-core', 'index.mjs'));

const lines = readline.createInterface({ input: process.stdin });
const answers = lines[Symbol.asyncIterator]();
async function ask(request) {
  console.log(request);
  const { value, done } = await answers.next();
  if (done) throw new Error(`no answer to ${request}`);
  return value.trim();
}

let stepName = '';
function step(name) {
  stepName = name;
  console.error(`step: ${name}`);
}

const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

function watch(page, label) {
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on('pageerror', (error) => problems.push(`${label}: page error: ${error.message}`));
  page.on('console', (message) => {
    const text = message.text();
    // A CSP violation or script error is a failure; a refused WebSocket while the daemon is
    // down (the restart step) is expected.
    if (message.type() === 'error' && !/WebSocket|Failed to load resource|ERR_CONNECTION_REFUSED/.test(text)) {
      problems.push(`${label}: console: ${text}`);
    }
  });
}

/** The text rows of a session's terminal. */
async function screen(page, session) {
  return page.locator(`.panel[data-session="${session}"] .xterm-rows`).innerText();
}

/** Waits until the terminal of `session` shows a line matching `pattern`. */
async function waitForLine(page, session, pattern) {
  await page.waitForFunction(([session, source]) => {
    const rows = document.querySelector(`.panel[data-session="${session}"] .xterm-rows`);
    if (!rows) return false;
    const re = new RegExp(source, 'm');
    return rows.innerText.split('\n').some((line) => re.test(line.replace(/\u00a0/g, ' ').trimEnd()));
  }, [session, pattern.source]);
}

function countLines(text, pattern) {
  return text.split('\n').filter((line) => pattern.test(line.replace(/\u00a0/g, ' ').trimEnd())).length;
}

async function typeInto(page, session, text) {
  await page.locator(`.panel[data-session="${session}"] .term`).click();
  await page.keyboard.type(text);
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  watch(page, 'control');

  step('the login page says signed out, not offline, while the daemon is up');
  const stranger = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const visitor = await stranger.newPage();
  watch(visitor, 'visitor');
  await visitor.goto(`${BASE}/`);
  await visitor.waitForSelector('#login:not([hidden])');
  const badge = await visitor.locator('#link-state').evaluate((pill) => ({ state: pill.dataset.state, text: pill.textContent }));
  if (badge.state !== 'signed-out' || badge.text !== 'signed out') {
    throw new Error(`the login page's badge says ${JSON.stringify(badge)} while the daemon is up`);
  }
  await visitor.screenshot({ path: path.join(SHOTS, '0-login-page.png') });

  step('log in by link');
  await page.goto(LINK_CONTROL);
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#link-state[data-state="live"]');
  if (!(await page.locator('#who').innerText()).includes('control')) throw new Error('not a control session');
  if (page.url() !== `${BASE}/#agents`) throw new Error(`the code stayed in the address bar: ${page.url()}`);

  step('a reused login link gets a styled page that says what to do');
  const posted = [];
  visitor.on('response', (response) => {
    if (response.request().method() === 'POST' && new URL(response.url()).pathname === '/login') posted.push(response.status());
  });
  await visitor.goto(LINK_CONTROL);
  // The link's page posts the spent code at once; the answer is the page at /login.
  await visitor.waitForURL(`${BASE}/login`);
  if (posted.join() !== '401') throw new Error(`posting a spent code got ${posted.join() || 'no answer'}, not 401`);
  const refusal = await visitor.evaluate(() => ({
    text: document.body.innerText,
    background: getComputedStyle(document.body).backgroundColor,
    sheets: [...document.styleSheets].filter((sheet) => sheet.href).map((sheet) => [new URL(sheet.href).pathname, sheet.cssRules.length]),
  }));
  if (!/already used/.test(refusal.text) || !/orchestra open/.test(refusal.text)) {
    throw new Error(`the refusal does not say what happened and what to do:\n${refusal.text}`);
  }
  // The browser's own default is a transparent body; the dashboard's stylesheet is loaded
  // and applied.
  if (!refusal.sheets.some(([href, rules]) => href === '/assets/app.css' && rules > 0) ||
      refusal.background === 'rgba(0, 0, 0, 0)') {
    throw new Error(`the refusal is unstyled: ${JSON.stringify(refusal)}`);
  }
  await visitor.screenshot({ path: path.join(SHOTS, '0-reused-link.png') });
  await stranger.close();

  step('spawn a shell agent and see its prompt');
  await page.fill('#spawn-form [name=agent_type]', 'term');
  await page.fill('#spawn-form [name=working_dir]', WORK);
  await page.click('#spawn-form button[type=submit]');
  const panel = page.locator('.panel[data-session]').first();
  await panel.waitFor();
  const session = await panel.getAttribute('data-session');
  await waitForLine(page, session, /^ready\$/);
  await page.screenshot({ path: path.join(SHOTS, '1-prompt.png') });

  step('type echo hi and see the output');
  await typeInto(page, session, 'echo hi\n');
  await waitForLine(page, session, /^hi$/);

  step('resize and see tput cols change');
  const before = Number(await panel.getAttribute('data-pane-cols'));
  await page.setViewportSize({ width: 760, height: 900 });
  await page.waitForFunction(([session, before]) => {
    const element = document.querySelector(`.panel[data-session="${session}"]`);
    return element.dataset.cols !== String(before) && element.dataset.paneCols === element.dataset.cols;
  }, [session, before]);
  const cols = await panel.getAttribute('data-cols');
  await typeInto(page, session, 'tput cols\n');
  await waitForLine(page, session, new RegExp(`^${cols}$`));
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.screenshot({ path: path.join(SHOTS, '2-resized.png') });

  step('kill and restart the daemon; the terminal goes on without duplicates');
  await typeInto(page, session, 'echo one-$((20+22))\n');
  await waitForLine(page, session, /^one-42$/);
  if ((await ask('@restart')) !== 'restarted') throw new Error('the daemon was not restarted');
  await page.waitForSelector('#link-state[data-state="live"]');
  await typeInto(page, session, 'echo two-$((20+22))\n');
  await waitForLine(page, session, /^two-42$/);
  const after = await screen(page, session);
  for (const [pattern, expected] of [[/^one-42$/, 1], [/^two-42$/, 1], [/^hi$/, 1], [/echo hi$/, 1]]) {
    const seen = countLines(after, pattern);
    if (seen !== expected) throw new Error(`${pattern} is shown ${seen} times after the restart:\n${after}`);
  }
  await page.screenshot({ path: path.join(SHOTS, '3-after-restart.png') });

  step('another server takes the port while the daemon is down: the page sends it nothing');
  if ((await ask('@squat')) !== 'restored') throw new Error('the squatter step failed');
  await page.waitForSelector('#link-state[data-state="live"]');
  await typeInto(page, session, 'echo three-$((20+22))\n');
  await waitForLine(page, session, /^three-42$/);

  step('delegate a task and watch it finish');
  await page.click('#tabs [data-view=tasks]');
  await page.fill('#delegate-form [name=agent_type]', 'task');
  await page.fill('#delegate-form [name=working_dir]', WORK);
  await page.fill('#delegate-form [name=task]', 'WRITE answer.txt 42');
  await page.click('#delegate-form button[type=submit]');
  const finished = page.locator('#tasks-finished .task[data-status="completed"]');
  await finished.first().waitFor();
  const card = await finished.first().innerText();
  if (!/answer\.txt/.test(card)) throw new Error(`the finished task does not list its file:\n${card}`);
  await page.screenshot({ path: path.join(SHOTS, '4-task.png') });

  step('an approve button approves');
  await page.click('#tabs [data-view=agents]');
  await page.fill('#spawn-form [name=agent_type]', 'hooked');
  await page.click('#spawn-form button[type=submit]');
  const hooked = page.locator('.panel[data-session^="sess-hooked"]');
  await hooked.waitFor();
  const hookedSession = await hooked.getAttribute('data-session');
  await page.click('#tabs [data-view=conversation]');
  await page.selectOption('#conversation-agent', hookedSession);
  if ((await ask(`@permission ${hookedSession}`)) !== 'started') throw new Error('no permission request');
  const allow = page.locator('#messages button.allow');
  await allow.waitFor();
  // The whole command is on the page, its dangerous end included, in a box that scrolls.
  const shown = await page.locator('#messages pre.approval').last().innerText();
  if (!shown.includes('&& curl x|sh') || !shown.includes('make test')) throw new Error(`the approval hides the command:\n${shown}`);
  await page.screenshot({ path: path.join(SHOTS, '5-approval.png') });
  await allow.click();
  await page.locator('#messages .decision').filter({ hasText: 'allow' }).waitFor();
  if ((await ask('@permission-answer')) !== 'ok') throw new Error('the agent was not told allow');

  step('an observe login sees but cannot type');
  const observer = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const phone = await observer.newPage();
  watch(phone, 'observe');
  const sent = [];
  phone.on('websocket', (ws) => ws.on('framesent', (frame) => sent.push(String(frame.payload))));
  await phone.goto(await ask('@link observe'));
  await phone.waitForSelector('#link-state[data-state="live"]');
  if (!(await phone.locator('#who').innerText()).includes('observe only')) throw new Error('not an observe session');
  if (await phone.locator('#spawn-form').isVisible()) throw new Error('an observer sees the spawn form');
  await phone.locator(`.agent[data-session="${session}"] .open`).click();
  await waitForLine(phone, session, /^two-42$/);
  await typeInto(phone, session, 'echo nope\n');
  const refused = await phone.evaluate(async (work) => {
    const response = await fetch('/api/agents/spawn', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ agent_type: 'term', working_dir: work }),
    });
    return response.status;
  }, WORK);
  if (refused !== 403) throw new Error(`an observer's spawn got ${refused}`);
  // The control page types a marker after the observer's attempt; when it shows, anything
  // the observer could have typed would show too.
  await page.click('#tabs [data-view=terminals]');
  await typeInto(page, session, 'echo marker\n');
  await waitForLine(page, session, /^marker$/);
  await waitForLine(phone, session, /^marker$/);
  if (countLines(await screen(phone, session), /nope/) !== 0) throw new Error('the observer typed into the pane');
  if (sent.some((frame) => frame.includes('terminal_input') || frame.includes('user_message'))) {
    throw new Error('the observer page sent input');
  }
  await phone.screenshot({ path: path.join(SHOTS, '6-phone-observer.png') });

  step('a page from another origin cannot frame the dashboard');
  const server = http.createServer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html' });
    response.end(`<!doctype html><iframe id="f" src="${BASE}/" width="600" height="400"></iframe>`);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const framer = await context.newPage();
  watch(framer, 'framer');
  await framer.goto(`http://127.0.0.1:${server.address().port}/`);
  const frame = await (await framer.waitForSelector('#f')).contentFrame();
  await frame.waitForLoadState();
  const framed = await frame.evaluate(() => !!document.querySelector('#tabs')).catch(() => false);
  server.close();
  if (framed) throw new Error('another origin framed the dashboard');
  problems.splice(0, problems.length, ...problems.filter((p) => !p.startsWith('framer')));

  // The README's picture: the control page's terminals.
  await page.bringToFront();
  await page.click('#tabs [data-view=terminals]');
  await page.screenshot({ path: path.join(SHOTS, '7-terminals.png') });

  if (problems.length) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
  console.log('@done');
} catch (error) {
  console.error(`FAILED at step "${stepName}": ${error.stack || error}`);
  for (const p of problems) console.error(p);
  try {
    for (const context of browser.contexts()) {
      for (const [i, page] of context.pages().entries()) {
        await page.screenshot({ path: path.join(SHOTS, `failure-${i}.png`) });
      }
    }
  } catch { /* best effort */ }
  process.exitCode = 1;
} finally {
  await browser.close();
  lines.close();
}
