// The dashboard of one daemon of a cluster, in a real Chromium driven by playwright-core.
// Started by tests/it/cluster.rs, which runs two daemons over NATS (alpha, whose page this
// is, and beta), each with one agent, and passes their session ids. Checks that every
// host's agents are shown with their host, that the host filter shows one host's agents,
// and that a task delegated from the page (into the cluster's queue) shows its host once
// it finished. Every step waits for what the page shows; screenshots go to SHOTS.
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const LINK_CONTROL = env('LOGIN_LINK_CONTROL');
const SHOTS = env('SHOTS');
const ALPHA_AGENT = env('ALPHA_AGENT');
const BETA_AGENT = env('BETA_AGENT');
const STEP_TIMEOUT = Number(process.env.STEP_TIMEOUT_MS || 30000);

const { chromium } = await import(path.join(env('PLAYWRIGHT_MODULES'), 'playwright-core', 'index.mjs'));

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

/** The session ids of the agent cards the page shows now. */
async function shownAgents(page) {
  return page.locator('#agent-list .agent').evaluateAll(
    (cards) => cards.filter((card) => card.offsetParent !== null).map((card) => card.dataset.session).sort());
}

async function waitForAgents(page, wanted) {
  const expected = [...wanted].sort();
  await page.waitForFunction((expected) => {
    const shown = [...document.querySelectorAll('#agent-list .agent')]
      .filter((card) => card.offsetParent !== null).map((card) => card.dataset.session).sort();
    return JSON.stringify(shown) === JSON.stringify(expected);
  }, expected);
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  // A failed request is reported by its answer below, with its address.
  page.on('console', (message) => {
    if (message.type() === 'error' && !/Failed to load resource/.test(message.text())) {
      problems.push(`console: ${message.text()}`);
    }
  });
  // An agent's details can be asked for just after its session ended (a task's agent ends
  // at once), or before its host's record lists it: 404, which the page handles.
  page.on('response', (response) => {
    const expected = response.status() === 404 && /\/api\/agents\/sess-/.test(response.url());
    if (response.status() >= 400 && !expected) {
      problems.push(`${response.request().method()} ${response.url()}: ${response.status()}`);
    }
  });

  step('log in on alpha');
  await page.goto(LINK_CONTROL);
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#link-state[data-state="live"]');

  step('every host\'s agents are shown, each with its host');
  await waitForAgents(page, [ALPHA_AGENT, BETA_AGENT]);
  for (const [session, host] of [[ALPHA_AGENT, 'alpha'], [BETA_AGENT, 'beta']]) {
    const shown = await page.locator(`#agent-list .agent[data-session="${session}"] .host`).innerText();
    if (shown !== host) throw new Error(`${session} shows host ${JSON.stringify(shown)}, not ${host}`);
  }
  await page.screenshot({ path: path.join(SHOTS, 'cluster-1-agents.png') });

  step('the host filter shows one host\'s agents');
  await page.waitForSelector('#host-filter:not([hidden])');
  const options = await page.locator('#host-filter option').evaluateAll((list) => list.map((o) => o.value));
  if (JSON.stringify(options) !== JSON.stringify(['', 'alpha', 'beta'])) {
    throw new Error(`the host filter offers ${JSON.stringify(options)}`);
  }
  await page.selectOption('#host-filter', 'beta');
  await waitForAgents(page, [BETA_AGENT]);
  if (!new URL(page.url()).hash.includes('agents')) throw new Error(`the view changed: ${page.url()}`);
  await page.screenshot({ path: path.join(SHOTS, 'cluster-2-filtered.png') });
  await page.selectOption('#host-filter', '');
  await waitForAgents(page, [ALPHA_AGENT, BETA_AGENT]);
  const all = await shownAgents(page);
  if (all.length !== 2) throw new Error(`after clearing the filter the page shows ${all}`);

  step('a task delegated from the page runs on a host of the cluster and shows it');
  await page.click('#tabs [data-view=tasks]');
  await page.fill('#delegate-form [name=agent_type]', 'task');
  await page.fill('#delegate-form [name=task]', 'SAY from the queue');
  await page.click('#delegate-form button[type=submit]');
  const finished = page.locator('#tasks-finished .task[data-status="completed"]');
  await finished.first().waitFor();
  // The card may show the end before the cluster's record of the ticket (with its host)
  // has reached this daemon: it shows the host once it has.
  try {
    await page.waitForFunction(() => {
      const card = document.querySelector('#tasks-finished .task[data-status="completed"]');
      return card && /on (alpha|beta)/.test(card.innerText);
    });
  } catch (error) {
    const card = await finished.first().innerText();
    throw new Error(`the finished task does not show its host:\n${card}`);
  }
  await page.screenshot({ path: path.join(SHOTS, 'cluster-3-task.png') });

  if (problems.length) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
  console.log('@done');
} catch (error) {
  console.error(`FAILED at step "${stepName}": ${error.stack || error}`);
  for (const p of problems) console.error(p);
  try {
    for (const context of browser.contexts()) {
      for (const [i, page] of context.pages().entries()) {
        await page.screenshot({ path: path.join(SHOTS, `cluster-failure-${i}.png`) });
      }
    }
  } catch { /* best effort */ }
  process.exitCode = 1;
} finally {
  await browser.close();
}
