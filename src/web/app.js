// Orchestra dashboard: plain JavaScript, no framework, no build step. It uses only the
// daemon's public API: REST under /api (authenticated by the session cookie) and one
// WebSocket to /ws/observe (opened with a one-time ticket). Text from agents is only ever
// set as textContent or written into xterm.js, never parsed as HTML.
'use strict';

/** Output waiting for the next animation frame, per terminal, beyond which the page skips
 *  to the current screen instead of falling further behind. */
const MAX_PENDING_BYTES = 2 * 1024 * 1024;
/** Bytes handed to xterm.js and not yet parsed, beyond which the page skips ahead. */
const MAX_UNPARSED_BYTES = 4 * 1024 * 1024;
/** Reconnect delays (ms) after the WebSocket drops; the last one repeats. */
const RECONNECT_DELAYS = [250, 500, 1000, 2000, 5000];

const $ = (selector, root = document) => root.querySelector(selector);

const state = {
  session: null,            // {subject, scopes, expires_at, via}
  control: false,
  ws: null,
  wsOpen: false,
  connecting: false,
  reconnects: 0,
  agents: new Map(),        // session_id -> agent summary (+ details)
  terminals: new Map(),     // session_id -> Terminal panel
  tasks: new Map(),         // task_id -> task view
  conversation: null,       // session_id shown in the conversation view
  messageSerial: 0,
  proven: null,             // a promise: the server proved it holds the page key
};

// ---------------------------------------------------------------- REST

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The page key (see docs on the browser security model): only this origin's page holds
 *  it, and the daemon accepts the session cookie only together with it. The session id
 *  beside it lets the page ask the server to prove it derives the key before sending it. */
const KEY_STORAGE = 'orchestra-page-key';
const SESSION_STORAGE = 'orchestra-session-id';

function takeKeyFromAddress() {
  const key = /(?:^#|&)key=([A-Za-z0-9_-]+)/.exec(location.hash);
  const session = /(?:^#|&)session=([A-Za-z0-9]+)/.exec(location.hash);
  if (!key) return;
  localStorage.setItem(KEY_STORAGE, key[1]);
  if (session) localStorage.setItem(SESSION_STORAGE, session[1]);
  history.replaceState(null, '', location.pathname);
}

function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
  localStorage.removeItem(SESSION_STORAGE);
  state.proven = null;
}

// ---------------------------------------------------------------- server proof
// While the daemon is down or restarting, another local program can listen on its port.
// Before the page sends a credential (the cookie with the page key, or a pasted token), the
// server answers a fresh challenge that only the daemon can: HMAC-SHA256 keyed with the page
// key (or the token's signature) over "orchestra-server-proof:<nonce>". The answer holds
// while this page's WebSocket to the daemon stays open (the daemon keeps its port); once
// the socket drops, the next call proves again. SHA-256 is computed here because
// crypto.subtle exists only on https and loopback pages.

const SHA256_K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** SHA-256 of a byte array. */
function sha256(bytes) {
  const length = bytes.length;
  const padded = new Uint8Array(((length + 9 + 63) >> 6) << 6);
  padded.set(bytes);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(padded.length - 4, (length << 3) >>> 0);
  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let offset = 0; offset < padded.length; offset += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(offset + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      k = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    const add = [a, b, c, d, e, f, g, k];
    for (let i = 0; i < 8; i++) h[i] = (h[i] + add[i]) >>> 0;
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) outView.setUint32(i * 4, h[i]);
  return out;
}

/** HMAC-SHA256 of `message` with `key` (strings, as UTF-8), base64url without padding. */
function hmacSha256(key, message) {
  const encoder = new TextEncoder();
  let keyBytes = encoder.encode(key);
  if (keyBytes.length > 64) keyBytes = sha256(keyBytes);
  const inner = new Uint8Array(64);
  const outer = new Uint8Array(64);
  inner.set(keyBytes);
  outer.set(keyBytes);
  for (let i = 0; i < 64; i++) { inner[i] ^= 0x36; outer[i] ^= 0x5c; }
  const messageBytes = encoder.encode(message);
  const innerInput = new Uint8Array(64 + messageBytes.length);
  innerInput.set(inner);
  innerInput.set(messageBytes, 64);
  const innerHash = sha256(innerInput);
  const outerInput = new Uint8Array(96);
  outerInput.set(outer);
  outerInput.set(innerHash, 64);
  let binary = '';
  for (const byte of sha256(outerInput)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Asks the server to prove it holds `key` (see above): resolves, or throws. Sends no
 *  cookie and nothing that grants access. */
async function proveServer(challenge, key) {
  const random = new Uint8Array(24);
  crypto.getRandomValues(random);
  const nonce = Array.from(random, (b) => b.toString(16).padStart(2, '0')).join('');
  let proof = null;
  try {
    const response = await fetch('/api/server-proof', {
      method: 'POST',
      credentials: 'omit',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ nonce, ...challenge }),
    });
    const data = await response.json();
    if (response.ok && data && typeof data.proof === 'string') proof = data.proof;
  } catch {
    throw new ApiError(0, 'UNREACHABLE', 'the daemon cannot be reached');
  }
  if (proof !== hmacSha256(key, `orchestra-server-proof:${nonce}`)) {
    throw new ApiError(0, 'UNTRUSTED_SERVER',
      'the server on this port could not prove it is the daemon; nothing was sent to it');
  }
}

/** Proves the server for the stored page key once per open WebSocket (shared by calls made
 *  meanwhile). */
function proveSession() {
  const key = localStorage.getItem(KEY_STORAGE);
  const session = localStorage.getItem(SESSION_STORAGE);
  if (!key || !session) return Promise.resolve(false);
  if (!state.proven) {
    const attempt = proveServer({ session }, key).then(() => true);
    state.proven = attempt;
    attempt.catch(() => { if (state.proven === attempt) state.proven = null; });
  }
  return state.proven;
}

async function api(method, path, body) {
  // The cookie and page key go only to a server that proved it derives the key; without
  // them (no login yet, or a login from before session ids were kept) nothing is sent.
  const proven = await proveSession();
  const options = { method, credentials: proven ? 'same-origin' : 'omit', headers: {} };
  if (proven) options.headers['X-Orchestra-Key'] = localStorage.getItem(KEY_STORAGE);
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    state.proven = null;
    throw error;
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const code = data && data.error_code ? data.error_code : `HTTP_${response.status}`;
    const message = data && data.message ? data.message : response.statusText;
    if (response.status === 401 && path !== '/api/login') showLogin(message);
    throw new ApiError(response.status, code, message);
  }
  return data;
}

/** `POST /api/login` with a pasted token, once the server proved it holds the token's key. */
async function logInWithToken(token) {
  const cut = token.lastIndexOf('.');
  if (cut < 0) throw new ApiError(0, 'INVALID_TOKEN', 'this is not a token');
  await proveServer({ token: token.slice(0, cut) }, token.slice(cut + 1));
  const response = await fetch('/api/login', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token }),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data && data.error_code, (data && data.message) || response.statusText);
  }
  return data;
}

function toast(message, kind = 'error') {
  const box = document.createElement('div');
  box.className = kind;
  box.textContent = message;
  $('#toasts').append(box);
  setTimeout(() => box.remove(), kind === 'error' ? 8000 : 4000);
}

function reportError(error) {
  toast(error.code ? `${error.code}: ${error.message}` : String(error.message || error));
}

// ---------------------------------------------------------------- login

/** Shows the login form. `linkState` is what the badge says: the daemon answered (the
 *  browser is signed out), or it could not be reached (offline). */
function showLogin(message, linkState = 'signed-out') {
  closeSocket(linkState);
  state.session = null;
  $('#app').hidden = true;
  $('#logout').hidden = true;
  $('#who').textContent = '';
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
}

async function boot() {
  takeKeyFromAddress();
  bindStaticHandlers();
  const hadSession = localStorage.getItem(KEY_STORAGE) !== null;
  let session;
  try {
    session = await api('GET', '/api/session');
  } catch (error) {
    if (error.status !== 401) showLogin(error.message, answered(error) ? 'signed-out' : 'offline');
    // A first visit has no session to lose: the form alone, without an error.
    else if (!hadSession) showLogin('');
    return;
  }
  start(session);
}

function start(session) {
  state.session = session;
  state.control = session.scopes.includes('control');
  document.body.classList.toggle('read-only', !state.control);
  $('#who').textContent = `${session.subject} · ${state.control ? 'control' : 'observe only'}`;
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = session.via !== 'cookie';
  $('#notify').hidden = !('Notification' in window) || Notification.permission !== 'default';
  showView(location.hash.slice(1) || 'agents');
  refreshAll();
  connect();
}

function bindStaticHandlers() {
  $('#login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const session = await logInWithToken($('#login-token').value.trim());
      if (session.key) localStorage.setItem(KEY_STORAGE, session.key);
      if (session.session) localStorage.setItem(SESSION_STORAGE, session.session);
      state.proven = null;
      $('#login-token').value = '';
      start(session);
    } catch (error) {
      setLinkState(answered(error) ? 'signed-out' : 'offline');
      $('#login-error').textContent = error.message;
    }
  });
  $('#logout').addEventListener('click', async () => {
    try { await api('POST', '/api/logout'); } catch (error) { reportError(error); }
    forgetKey();
    for (const id of [...state.terminals.keys()]) closeTerminal(id);
    showLogin('Logged out.');
  });
  $('#notify').addEventListener('click', async () => {
    await Notification.requestPermission();
    $('#notify').hidden = true;
  });
  for (const button of document.querySelectorAll('#tabs button')) {
    button.addEventListener('click', () => showView(button.dataset.view));
  }
  $('#spawn-form').addEventListener('submit', spawnAgent);
  $('#host-filter').addEventListener('change', renderAgents);
  $('#delegate-form').addEventListener('submit', delegateTask);
  $('#message-form').addEventListener('submit', sendConversationMessage);
  $('#conversation-agent').addEventListener('change', (event) => showConversation(event.target.value));
  window.addEventListener('resize', () => { for (const t of state.terminals.values()) t.fit(); });
  // After sleep the socket may be dead without knowing it: a ping finds out.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') send({ type: 'ping' });
  });
}

function showView(name) {
  if (!document.getElementById(name)) name = 'agents';
  for (const view of document.querySelectorAll('.view')) view.classList.toggle('active', view.id === name);
  for (const button of document.querySelectorAll('#tabs button')) {
    button.setAttribute('aria-pressed', String(button.dataset.view === name));
  }
  history.replaceState(null, '', `#${name}`);
  if (name === 'terminals') requestAnimationFrame(() => { for (const t of state.terminals.values()) t.fit(); });
}

// ---------------------------------------------------------------- WebSocket

async function connect() {
  // One socket at a time: a second call while one is being opened does nothing.
  if (state.ws || state.connecting || !state.session) return;
  state.connecting = true;
  setLinkState('reconnecting');
  let ticket;
  try {
    ticket = (await api('POST', '/api/ws-ticket')).ticket;
  } catch (error) {
    state.connecting = false;
    if (error.status !== 401) scheduleReconnect();
    return;
  }
  state.connecting = false;
  if (state.ws || !state.session) return;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws/observe?ticket=${encodeURIComponent(ticket)}`);
  state.ws = ws;
  ws.addEventListener('open', () => {
    state.wsOpen = true;
    const resumed = state.reconnects > 0;
    state.reconnects = 0;
    setLinkState('live');
    for (const terminal of state.terminals.values()) terminal.subscribe();
    if (resumed) refreshAll();
  });
  ws.addEventListener('message', (event) => {
    if (state.ws !== ws) return; // a socket this page has already given up
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    onMessage(message);
  });
  ws.addEventListener('close', () => {
    if (state.ws !== ws) return;
    // The daemon may be gone and its port taken: prove it again before the next call.
    state.proven = null;
    state.ws = null;
    state.wsOpen = false;
    if (state.session) scheduleReconnect();
  });
}

function scheduleReconnect() {
  setLinkState('reconnecting');
  const delay = RECONNECT_DELAYS[Math.min(state.reconnects, RECONNECT_DELAYS.length - 1)];
  state.reconnects += 1;
  setTimeout(connect, delay);
}

/** Closes the WebSocket; the badge then says `linkState`. */
function closeSocket(linkState = 'offline') {
  const ws = state.ws;
  state.ws = null;
  state.wsOpen = false;
  if (ws) ws.close(1000);
  setLinkState(linkState);
}

/** What the connection badge says for each of its states. */
const LINK_LABELS = {
  checking: 'checking',
  live: 'live',
  reconnecting: 'reconnecting',
  offline: 'offline',
  'signed-out': 'signed out',
};

function setLinkState(value) {
  const pill = $('#link-state');
  pill.dataset.state = value;
  pill.textContent = LINK_LABELS[value] || value;
}

/** Whether the daemon answered the call that failed with `error` (an HTTP status), rather
 *  than being unreachable or unproven. */
function answered(error) {
  return error instanceof ApiError && error.status > 0;
}

function send(message) {
  if (!state.ws || !state.wsOpen) return false;
  state.ws.send(JSON.stringify(message));
  return true;
}

function onMessage(message) {
  const terminal = message.session_id ? state.terminals.get(message.session_id) : null;
  switch (message.type) {
    case 'terminal_output':
      if (terminal) terminal.output(message);
      break;
    case 'terminal_gap':
      if (terminal) terminal.gap(message);
      break;
    case 'agent_status':
      onAgentStatus(message);
      break;
    case 'claude_response':
    case 'user_message_delivered':
    case 'tool_decision':
      onConversationEvent(message);
      break;
    case 'task_update':
      onTaskUpdate(message);
      break;
    case 'resize_terminal_ack':
      if (terminal) terminal.resized(message.cols, message.rows);
      break;
    case 'user_message_ack':
    case 'terminal_input_ack':
    case 'subscribed':
    case 'unsubscribed':
    case 'pong':
      break;
    case 'error':
      onError(message, terminal);
      break;
    default:
      break;
  }
}

function onError(message, terminal) {
  if (message.error_code === 'AGENT_CRASHED' && terminal) {
    terminal.notice(`The agent crashed (${message.exit_code ?? 'signal ' + message.exit_signal}).`);
    return;
  }
  if (message.error_code === 'SESSION_NOT_FOUND' && terminal) {
    terminal.notice('This session no longer exists.');
    return;
  }
  toast(`${message.error_code}: ${message.message}`);
}

// ---------------------------------------------------------------- agents

async function refreshAll() {
  try {
    const [agents, tasks] = await Promise.all([api('GET', '/api/agents'), api('GET', '/api/tasks')]);
    const seen = new Set();
    for (const agent of agents.agents) {
      seen.add(agent.session_id);
      state.agents.set(agent.session_id, { ...(state.agents.get(agent.session_id) || {}), ...agent });
      loadDetails(agent.session_id);
    }
    for (const id of [...state.agents.keys()]) if (!seen.has(id)) state.agents.delete(id);
    for (const task of tasks.tasks) state.tasks.set(task.ticket_id, task);
    renderAgents();
    renderTasks();
  } catch (error) {
    if (error.status !== 401) reportError(error);
  }
}

async function loadDetails(sessionId) {
  try {
    const details = await api('GET', `/api/agents/${encodeURIComponent(sessionId)}`);
    const known = state.agents.get(sessionId);
    if (known) {
      state.agents.set(sessionId, { ...known, ...details });
      renderAgents();
    }
  } catch (error) {
    if (error.status === 404) {
      state.agents.delete(sessionId);
      renderAgents();
    }
  }
}

function onAgentStatus(message) {
  const known = state.agents.get(message.session_id);
  const before = known ? known.activity : null;
  state.agents.set(message.session_id, { ...(known || {}), ...message });
  if (!known) loadDetails(message.session_id);
  const terminal = state.terminals.get(message.session_id);
  if (terminal) terminal.setStatus(message.status);
  if (before !== message.activity && (message.activity === 'waiting_input' || message.activity === 'needs_approval')) {
    notify(`${message.session_id} ${message.activity === 'needs_approval' ? 'needs approval' : 'waits for input'}`,
      message.evidence ? message.evidence.detail : '');
  }
  renderAgents();
}

/** In a cluster, the host filter offers every host an agent runs on; it is hidden on one host. */
function renderHostFilter(agents) {
  const select = $('#host-filter');
  const hosts = [...new Set(agents.map((agent) => agent.host).filter(Boolean))].sort();
  $('#host-filter-label').hidden = hosts.length === 0;
  const chosen = select.value;
  const options = [new Option('all hosts', ''), ...hosts.map((host) => new Option(host, host))];
  select.replaceChildren(...options);
  select.value = hosts.includes(chosen) ? chosen : '';
  return select.value;
}

function renderAgents() {
  const list = $('#agent-list');
  const template = $('#agent-card');
  const all = [...state.agents.values()].sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
  const host = renderHostFilter(all);
  const agents = host ? all.filter((agent) => agent.host === host) : all;
  $('#agents-empty').hidden = agents.length > 0;
  const cards = agents.map((agent) => {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.session = agent.session_id;
    $('.name', card).textContent = agent.session_id;
    $('.type', card).textContent = agent.agent_type;
    if (agent.host) {
      const pill = $('.host', card);
      pill.hidden = false;
      pill.textContent = agent.host;
      pill.title = `runs on host ${agent.host}`;
    }
    const status = $('.status', card);
    status.textContent = agent.status;
    status.dataset.status = agent.status;
    const activity = $('.activity', card);
    activity.textContent = agent.activity || '';
    activity.dataset.activity = agent.activity || '';
    if (agent.evidence) activity.title = `${agent.evidence.source}: ${agent.evidence.detail}`;
    $('.since', card).textContent = agent.created_at ? `up ${since(agent.created_at)}` : '';
    $('.dir', card).textContent = agent.working_dir || '';
    const stats = [];
    if (agent.memory_mb !== undefined && agent.memory_mb !== null) stats.push(`${agent.memory_mb} MB`);
    if (agent.cpu_percent !== undefined && agent.cpu_percent !== null) stats.push(`${agent.cpu_percent}% CPU`);
    if (agent.pid) stats.push(`pid ${agent.pid}`);
    $('.stats', card).textContent = stats.join(' · ');
    $('.open', card).addEventListener('click', () => openTerminal(agent.session_id));
    const kill = $('.kill', card);
    kill.addEventListener('click', () => confirmThen(kill, 'Really kill?', () => killAgent(agent.session_id)));
    return card;
  });
  list.replaceChildren(...cards);
  renderConversationChoices();
}

/** A two-step button: the first click asks, a second click within 4 s does it. */
function confirmThen(button, question, action) {
  if (button.dataset.armed === '1') {
    button.dataset.armed = '';
    action();
    return;
  }
  const label = button.textContent;
  button.dataset.armed = '1';
  button.textContent = question;
  setTimeout(() => { button.dataset.armed = ''; button.textContent = label; }, 4000);
}

async function spawnAgent(event) {
  event.preventDefault();
  const form = event.target;
  const body = { agent_type: form.agent_type.value.trim() };
  if (form.name.value.trim()) body.name = form.name.value.trim();
  if (form.working_dir.value.trim()) body.working_dir = form.working_dir.value.trim();
  try {
    const agent = await api('POST', '/api/agents/spawn', body);
    state.agents.set(agent.session_id, { ...(state.agents.get(agent.session_id) || {}), ...agent });
    renderAgents();
    loadDetails(agent.session_id);
    openTerminal(agent.session_id);
  } catch (error) {
    reportError(error);
  }
}

async function killAgent(sessionId) {
  try {
    await api('DELETE', `/api/agents/${encodeURIComponent(sessionId)}`);
    loadDetails(sessionId);
  } catch (error) {
    reportError(error);
  }
}

function since(timestamp) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(timestamp)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

// ---------------------------------------------------------------- terminals

/** One agent's terminal: an xterm.js fed from /ws/observe. It starts from the daemon's
 *  screen, then appends output exactly once: after a reconnect it asks for the output
 *  `since` the last offset it wrote, and drops anything it already has. */
class TerminalPanel {
  constructor(sessionId) {
    this.sessionId = sessionId;
    this.stream = null;
    this.nextOffset = null;   // offset just past the last byte written
    this.pending = [];
    this.pendingBytes = 0;
    this.unparsed = 0;
    this.frame = 0;
    this.resizeTimer = 0;
    this.element = $('#terminal-panel').content.firstElementChild.cloneNode(true);
    this.element.dataset.session = sessionId;
    $('.name', this.element).textContent = sessionId;
    const agent = state.agents.get(sessionId);
    this.setStatus(agent ? agent.status : '');
    this.term = new window.Terminal({
      convertEol: false,
      cursorBlink: false,
      disableStdin: !state.control,
      scrollback: 5000,
      fontSize: 13,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace',
      theme: { background: '#000000' },
      // Links an agent prints (OSC 8) open only if they are http(s), in a new tab that
      // cannot reach back into this page.
      linkHandler: {
        activate: (_event, uri) => {
          if (/^https?:\/\//i.test(uri)) window.open(uri, '_blank', 'noopener,noreferrer');
        },
      },
    });
    // The pane's own terminal (tmux) already answers queries such as device attributes,
    // cursor position and colours; xterm.js must not type its answers into the pane too.
    const swallow = () => true;
    for (const id of [{ final: 'c' }, { prefix: '>', final: 'c' }, { prefix: '=', final: 'c' }, { final: 'n' },
      { prefix: '?', final: 'n' }, { prefix: '?', intermediates: '$', final: 'p' }, { intermediates: '$', final: 'p' },
      { final: 't' }]) {
      this.term.parser.registerCsiHandler(id, swallow);
    }
    for (const osc of [4, 10, 11, 12]) {
      this.term.parser.registerOscHandler(osc, (data) => data.includes('?'));
    }
    this.fitAddon = new window.FitAddon.FitAddon();
    this.term.loadAddon(this.fitAddon);
    $('#terminal-grid').append(this.element);
    this.term.open($('.term', this.element));
    this.element.dataset.cols = this.term.cols;
    this.element.dataset.rows = this.term.rows;
    if (state.control) {
      this.term.onData((data) => send({ type: 'terminal_input', session_id: this.sessionId, data }));
      this.term.onResize(({ cols, rows }) => this.sendSize(cols, rows));
    }
    this.term.onResize(({ cols, rows }) => {
      this.element.dataset.cols = cols;
      this.element.dataset.rows = rows;
    });
    $('.close', this.element).addEventListener('click', () => closeTerminal(this.sessionId));
    $('.full', this.element).addEventListener('click', () => {
      this.element.classList.toggle('fullscreen');
      requestAnimationFrame(() => { this.fit(); this.term.focus(); });
    });
    $('.send', this.element).addEventListener('submit', (event) => {
      event.preventDefault();
      const input = event.target.content;
      if (!input.value) return;
      state.messageSerial += 1;
      if (send({ type: 'user_message', session_id: this.sessionId, content: input.value, id: `page-${state.messageSerial}` })) {
        input.value = '';
      } else {
        toast('Not connected; the message was not sent.');
      }
    });
    new ResizeObserver(() => this.fit()).observe($('.term', this.element));
    this.subscribe();
  }

  subscribe() {
    const message = { type: 'subscribe_terminal', session_id: this.sessionId };
    if (this.nextOffset !== null && this.stream) {
      message.since = this.nextOffset;
      message.stream = this.stream;
    }
    send(message);
  }

  setStatus(status) {
    const pill = $('.status', this.element);
    pill.textContent = status || '';
    pill.dataset.status = status || '';
  }

  notice(text) {
    const notice = $('.notice', this.element);
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => { notice.hidden = true; }, 10000);
  }

  /** Output between `since` and `offset` cannot be delivered; a screen follows. */
  gap(message) {
    const lost = message.offset - message.since;
    const what = message.stream !== this.stream || lost <= 0
      ? 'The daemon started a new output stream'
      : `${lost} bytes of output were skipped`;
    this.notice(`${what} (${message.reason || 'gap'}); showing the current screen.`);
  }

  output(message) {
    if (message.snapshot) {
      // A screen replaces everything before it, written or still pending.
      this.pending = [{ reset: true, rows: message.rows, cols: message.cols }, message.data];
      this.pendingBytes = message.data.length;
      this.stream = message.stream;
      this.nextOffset = message.next_offset;
      this.awaitingScreen = false;
      this.schedule();
      return;
    }
    if (this.awaitingScreen) return; // output from before the screen we asked for
    if (this.stream === message.stream && this.nextOffset !== null && message.next_offset <= this.nextOffset) {
      return; // Already written (a resumed subscription overlaps what we have).
    }
    this.stream = message.stream;
    this.nextOffset = message.next_offset;
    this.pending.push(message.data);
    this.pendingBytes += message.data.length;
    if (this.pendingBytes > MAX_PENDING_BYTES || this.unparsed > MAX_UNPARSED_BYTES) {
      this.skipAhead();
      return;
    }
    this.schedule();
  }

  /** The page cannot keep up: drop what waits and ask for the current screen. */
  skipAhead() {
    this.pending = [];
    this.pendingBytes = 0;
    this.nextOffset = null;
    this.awaitingScreen = true;
    // Writes already handed to xterm.js no longer count against the limit.
    this.writeGeneration = (this.writeGeneration || 0) + 1;
    this.unparsed = 0;
    this.notice('Output is faster than this page can draw: skipped to the current screen.');
    send({ type: 'unsubscribe_terminal', session_id: this.sessionId });
    send({ type: 'subscribe_terminal', session_id: this.sessionId });
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  /** Writes everything that arrived since the last frame in one call. */
  flush() {
    this.frame = 0;
    let text = '';
    for (const item of this.pending) {
      if (typeof item === 'string') {
        text += item;
      } else if (item.reset) {
        // In band, after whatever xterm.js still has queued, so stale output cannot land
        // on top of the new screen.
        this.term.write('\x1bc');
        if (!state.control && item.cols && item.rows) this.term.resize(item.cols, item.rows);
        this.paneSize = { cols: item.cols, rows: item.rows };
        this.resized(item.cols, item.rows);
      }
    }
    this.pending = [];
    this.pendingBytes = 0;
    if (text) {
      const bytes = text.length;
      const generation = this.writeGeneration || 0;
      this.unparsed += bytes;
      this.term.write(text, () => { if (generation === (this.writeGeneration || 0)) this.unparsed -= bytes; });
    }
    if (state.control && this.paneSize &&
        (this.paneSize.cols !== this.term.cols || this.paneSize.rows !== this.term.rows)) {
      this.sendSize(this.term.cols, this.term.rows);
    }
  }

  fit() {
    const box = $('.term', this.element);
    if (!box.offsetParent || box.clientWidth === 0) return;
    try { this.fitAddon.fit(); } catch { /* not visible */ }
  }

  sendSize(cols, rows) {
    clearTimeout(this.resizeTimer);
    this.resizeTimer = setTimeout(() => {
      if (this.paneSize && this.paneSize.cols === cols && this.paneSize.rows === rows) return;
      if (send({ type: 'resize_terminal', session_id: this.sessionId, cols, rows })) {
        this.paneSize = { cols, rows };
      }
    }, 100);
  }

  /** The daemon resized the pane (its `resize_terminal_ack`). */
  resized(cols, rows) {
    this.element.dataset.paneCols = cols;
    this.element.dataset.paneRows = rows;
  }

  dispose() {
    send({ type: 'unsubscribe_terminal', session_id: this.sessionId });
    cancelAnimationFrame(this.frame);
    this.term.dispose();
    this.element.remove();
  }
}

function openTerminal(sessionId) {
  let terminal = state.terminals.get(sessionId);
  if (!terminal) {
    terminal = new TerminalPanel(sessionId);
    state.terminals.set(sessionId, terminal);
  }
  $('#terminals-empty').hidden = true;
  showView('terminals');
  terminal.fit();
  terminal.term.focus();
}

function closeTerminal(sessionId) {
  const terminal = state.terminals.get(sessionId);
  if (!terminal) return;
  terminal.dispose();
  state.terminals.delete(sessionId);
  $('#terminals-empty').hidden = state.terminals.size > 0;
}

// ---------------------------------------------------------------- conversation

function renderConversationChoices() {
  const select = $('#conversation-agent');
  const ids = [...state.agents.keys()];
  const current = state.conversation || ids.find((id) => id.startsWith('sess-claude')) || ids[0] || '';
  select.replaceChildren(...ids.map((id) => {
    const option = document.createElement('option');
    option.value = id;
    option.textContent = id;
    return option;
  }));
  if (current && current !== state.conversation) showConversation(current);
  select.value = current;
}

async function showConversation(sessionId) {
  state.conversation = sessionId;
  $('#messages').replaceChildren();
  if (!sessionId) return;
  try {
    const history = await api('GET', `/api/agents/${encodeURIComponent(sessionId)}/messages`);
    if (state.conversation !== sessionId) return;
    for (const entry of history.messages || []) addMessage(entry);
  } catch (error) {
    if (error.status !== 404) reportError(error);
  }
}

/** Adds one conversation entry: a user message or an agent's reply with its actions. */
function addMessage(entry) {
  const item = document.createElement('li');
  const fromUser = entry.role === 'user' || entry.type === 'user_message';
  item.className = fromUser ? 'user' : 'agent';
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${fromUser ? 'you' : entry.session_id || state.conversation} · ${entry.timestamp || ''}`;
  const body = document.createElement('div');
  body.textContent = entry.content || '';
  item.append(meta, body);
  const actions = entry.actions || [];
  // What an approval approves is shown whole, in a box that scrolls rather than cuts.
  if (actions.length) body.className = 'approval-text';
  if (actions.length) {
    const row = document.createElement('div');
    row.className = 'actions control-only';
    for (const action of actions) row.append(...actionButtons(entry, action));
    item.append(row);
  }
  $('#messages').append(item);
  item.scrollIntoView({ block: 'nearest' });
}

function actionButtons(entry, action) {
  const make = (label, onClick) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = label;
    button.addEventListener('click', () => {
      if (onClick()) for (const b of button.parentElement.querySelectorAll('button')) b.disabled = true;
    });
    return button;
  };
  if (action.type === 'approve_tool') {
    const decide = (decision) => () => send({
      type: 'approve_tool', session_id: entry.session_id, request_id: action.request_id, decision,
    });
    const label = approvalBox(approvalToolText(action));
    const allow = make('Allow', decide('allow'));
    allow.dataset.request = action.request_id;
    allow.className = 'allow';
    const deny = make('Deny', decide('deny'));
    deny.className = 'deny';
    return [label, allow, deny];
  }
  if (action.type === 'approve_plan') {
    const parts = (action.tasks || []).map((task) => approvalBox(approvalTaskText(task)));
    const approve = make(action.button_text || 'Approve', () => send({ type: 'approve_plan', task_ids: action.task_ids, session_id: entry.session_id || state.conversation }));
    approve.className = 'approve';
    const reject = make('Reject', () => send({ type: 'reject_plan', task_ids: action.task_ids, session_id: entry.session_id || state.conversation }));
    reject.className = 'reject';
    return [...parts, approve, reject];
  }
  return [];
}

/** A scrollable box with text shown whole (never cut): what a person approves. */
function approvalBox(text) {
  const pre = document.createElement('pre');
  pre.className = 'approval';
  pre.textContent = text;
  return pre;
}

/** An `approve_tool` action in full: the tool, its main argument, and every argument. */
function approvalToolText(action) {
  let text = action.summary || action.tool || 'a tool';
  if (action.tool_input !== undefined && action.tool_input !== null) {
    text += `\n\narguments:\n${JSON.stringify(action.tool_input, null, 2)}`;
  }
  return text;
}

/** One task of an `approve_plan` action in full: what runs, where, and its test command. */
function approvalTaskText(task) {
  const lines = [
    `task ${task.task_id}: agent ${task.agent_type}`,
    `working dir: ${task.working_dir}${task.isolation === 'worktree' ? ' (in a worktree)' : ''}`,
    `test_command: ${task.test_command ? JSON.stringify(task.test_command) : 'none'}${task.test_command && !task.tests_run ? ' (does not run)' : ''}`,
  ];
  const context = task.context || {};
  if ((context.files || []).length || (context.requirements || []).length) {
    lines.push(`context: ${JSON.stringify(context)}`);
  }
  lines.push('task:', task.task || '');
  return lines.join('\n');
}

function onConversationEvent(message) {
  if (message.type === 'claude_response') {
    if (message.session_id === state.conversation) addMessage(message);
    const asks = (message.actions || []).length > 0;
    notify(`${message.session_id} ${asks ? 'asks for approval' : 'replied'}`, String(message.content || '').slice(0, 200));
    if (asks && message.session_id !== state.conversation) toast(`${message.session_id} asks for approval (Conversation)`, 'info');
  } else if (message.type === 'tool_decision') {
    const button = document.querySelector(`button.allow[data-request="${CSS.escape(message.request_id)}"]`);
    if (button) {
      const note = document.createElement('span');
      note.className = 'muted decision';
      note.textContent = ` ${message.decision}`;
      button.parentElement.append(note);
      for (const b of button.parentElement.querySelectorAll('button')) b.disabled = true;
    }
  }
}

function sendConversationMessage(event) {
  event.preventDefault();
  const form = event.target;
  const content = form.content.value;
  if (!content || !state.conversation) return;
  state.messageSerial += 1;
  if (send({ type: 'user_message', session_id: state.conversation, content, id: `page-${state.messageSerial}` })) {
    addMessage({ type: 'user_message', content, timestamp: new Date().toISOString() });
    form.content.value = '';
  } else {
    toast('Not connected; the message was not sent.');
  }
}

function notify(title, body) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  if (document.visibilityState === 'visible' && document.hasFocus()) return;
  try { new Notification(title, { body, tag: title }); } catch { /* not allowed here */ }
}

// ---------------------------------------------------------------- tasks

// Tickets are keyed by ticket id: task ids are per host, and a ticket in a cluster's queue
// has none until a host claims it.
function onTaskUpdate(message) {
  const known = state.tasks.get(message.ticket_id) || { ticket_id: message.ticket_id };
  state.tasks.set(message.ticket_id, {
    ...known,
    task_id: message.task_id,
    ticket_id: message.ticket_id,
    session_id: message.session_id,
    agent: message.agent,
    status: message.status,
    duration_ms: message.elapsed_ms,
    result: message.result || known.result,
  });
  // The full ticket (its text, its host) comes from the API; so does a final one's result.
  if (!known.task || message.status !== known.status) refreshTask(message.ticket_id);
  renderTasks();
}

async function refreshTask(ticketId) {
  try {
    const task = await api('GET', `/api/tasks/${encodeURIComponent(ticketId)}`);
    state.tasks.set(task.ticket_id, { ...(state.tasks.get(task.ticket_id) || {}), ...task });
    renderTasks();
  } catch { /* shown on the next update */ }
}

const COLUMN = { proposed: 'proposed', pending: 'pending', running: 'running' };

function renderTasks() {
  const columns = { proposed: [], pending: [], running: [], finished: [] };
  const tasks = [...state.tasks.values()].sort((a, b) => String(b.created_at || '').localeCompare(String(a.created_at || '')) || (b.task_id || 0) - (a.task_id || 0));
  for (const task of tasks) columns[COLUMN[task.status] || 'finished'].push(taskCard(task));
  for (const [name, cards] of Object.entries(columns)) $(`#tasks-${name}`).replaceChildren(...cards);
}

function taskCard(task) {
  const card = $('#task-card').content.firstElementChild.cloneNode(true);
  card.dataset.task = task.ticket_id;
  card.dataset.status = task.status;
  const number = task.task_id !== undefined && task.task_id !== null ? `#${task.task_id}` : String(task.ticket_id || '').slice(0, 15);
  $('.title', card).textContent = `${number} ${task.status}`;
  $('.agent', card).textContent = task.host ? `${task.agent || ''} on ${task.host}` : (task.agent || '');
  $('.elapsed', card).textContent = task.duration_ms !== undefined && task.duration_ms !== null
    ? `${(task.duration_ms / 1000).toFixed(1)} s` : '';
  $('.text', card).textContent = task.task || '';
  if (task.working_dir) {
    // Where it runs and what tests it, whole: a proposed task is approved on what it shows.
    const where = document.createElement('div');
    where.className = 'where muted';
    where.textContent = `in ${task.working_dir}${task.test_command ? ` · test_command ${JSON.stringify(task.test_command)}` : ''}`;
    $('.text', card).after(where);
  }
  const result = task.result;
  if (result) {
    const parts = [];
    const line = (text) => { const p = document.createElement('div'); p.textContent = text; parts.push(p); };
    if (result.message) line(result.message);
    if (result.files_modified && result.files_modified.length) line(`Files: ${result.files_modified.join(', ')}`);
    if (result.tests_passed !== null && result.tests_passed !== undefined) line(`Tests ${result.tests_passed ? 'passed' : 'failed'}`);
    if (result.branch) line(`Branch: ${result.branch}`);
    if (result.error) line(`Error: ${result.error}`);
    if (result.tests_output) {
      const details = document.createElement('details');
      const summary = document.createElement('summary');
      summary.textContent = 'Test output';
      const pre = document.createElement('pre');
      pre.textContent = result.tests_output;
      details.append(summary, pre);
      parts.push(details);
    }
    $('.result', card).replaceChildren(...parts);
  }
  const cancel = $('.cancel', card);
  if (task.status === 'pending' || task.status === 'running' || task.status === 'proposed') {
    cancel.addEventListener('click', () => confirmThen(cancel, 'Really cancel?', () => cancelTask(task.ticket_id)));
  } else {
    cancel.remove();
  }
  return card;
}

async function delegateTask(event) {
  event.preventDefault();
  const form = event.target;
  const body = { agent_type: form.agent_type.value.trim(), task: form.task.value };
  if (form.working_dir.value.trim()) body.working_dir = form.working_dir.value.trim();
  if (form.worktree.checked) body.isolation = 'worktree';
  const test = form.test_command.value.trim();
  if (test) body.test_command = test.split(/\s+/);
  try {
    const ticket = await api('POST', '/api/delegate', body);
    form.task.value = '';
    state.tasks.set(ticket.ticket_id, { ...(state.tasks.get(ticket.ticket_id) || {}), ...ticket, agent: body.agent_type, task: body.task });
    renderTasks();
    refreshTask(ticket.ticket_id);
  } catch (error) {
    reportError(error);
  }
}

async function cancelTask(ticketId) {
  try {
    await api('DELETE', `/api/tasks/${encodeURIComponent(ticketId)}`);
    refreshTask(ticketId);
  } catch (error) {
    reportError(error);
  }
}

boot();
