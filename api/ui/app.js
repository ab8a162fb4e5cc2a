// The vsfleet dashboard: plain JavaScript against the public API, with the
// token the operator signs in with. Everything that comes from the API is
// put into the page as text (textContent, text nodes), never as markup.
//
// Live updates come from `GET /v1/events`. EventSource cannot send an
// Authorization header, so the stream is read with fetch() and parsed here;
// after an error it reconnects with the last event id it saw.

const TOKEN_KEY = 'vsfleet.token';
const RECONNECT_MS = 2000;
const HOSTS_EVERY_MS = 10000;
const CONTAINERS_EVERY_MS = 5000;

// README "States": what each status allows. A status not listed here (a new
// one) shows every action and lets the API say no.
const ALLOWED = {
  creating: [],
  running: ['stop', 'restart', 'delete'],
  stopped: ['start', 'restart', 'delete'],
  missing: ['start', 'delete'],
  failed: ['start', 'delete', 'purge'],
  deleting: [],
  deleted: ['restore', 'purge'],
};
const ALL_ACTIONS = ['start', 'stop', 'restart', 'delete', 'restore', 'purge'];

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  /** Bumped at each sign-in and sign-out: late answers of an old session are dropped. */
  session: 0,
  servers: new Map(),
  selected: null,
  lastEventId: null,
  stream: null,
  listing: null,
  listAgain: false,
  jobsTimer: null,
  timers: [],
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// --- the API ---------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return readReply(await fetch(path, init));
}

/** Every server the caller may see, following the list's pages (`next`). */
async function allServers() {
  const servers = [];
  let after = null;
  do {
    const query = after === null ? '' : `&after=${encodeURIComponent(after)}`;
    const reply = await api('GET', `/v1/servers?include_deleted=true&limit=500${query}`);
    servers.push(...reply.servers);
    after = reply.next;
  } while (after !== null && after !== undefined);
  return servers;
}

/** The JSON body of a reply; for an error, an ApiError with the API's message. */
async function readReply(response) {
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error;
    throw new ApiError(
      response.status,
      (error && error.code) || `http_${response.status}`,
      (error && error.message) || `${response.status} ${response.statusText}`.trim(),
    );
  }
  return data;
}

// --- the page --------------------------------------------------------------

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? ''));
  }
  return node;
}

function badge(status) {
  return el('span', { class: `badge badge-${status}` }, status);
}

function when(text) {
  if (!text) return '—';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

function notice(message) {
  $('notice').textContent = message;
  $('notice').hidden = false;
}

/** Shows a failed call's message; a refused token signs out. */
function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut();
    showError(`Signed out: ${error.message}`);
    return;
  }
  showError(error.message || String(error));
}

function setLive(mode, detail) {
  const live = $('live');
  live.dataset.state = mode;
  live.textContent = { live: 'live', reconnecting: 'reconnecting…', off: 'offline' }[mode];
  live.title = detail || '';
}

// --- servers ---------------------------------------------------------------

function renderServers() {
  const rows = [...state.servers.values()].sort((a, b) => a.id - b.id).map(serverRow);
  $('server-rows').replaceChildren(...rows);
  $('no-servers').hidden = rows.length > 0;
}

function serverRow(server) {
  const actions = ALLOWED[server.status] ?? ALL_ACTIONS;
  const buttons = actions.map((action) =>
    el('button', { type: 'button', 'data-action': action, class: action === 'purge' ? 'danger' : null }, action),
  );
  const host = server.host_alive === false ? `${server.host} (not alive)` : server.host;
  const row = el(
    'tr',
    { 'data-server-id': server.id, 'data-status': server.status },
    el('td', {}, server.id),
    el('td', { class: 'name' }, el('button', { type: 'button', class: 'link', 'data-select': '' }, server.name)),
    el('td', { class: 'status' }, badge(server.status)),
    el('td', {}, host),
    el('td', {}, server.cpus ?? '—'),
    el('td', {}, server.memory_mb == null ? '—' : `${server.memory_mb} MB`),
    el('td', { class: 'last-error' }, server.last_error ?? ''),
    el('td', { class: 'actions' }, ...buttons),
  );
  if (server.id === state.selected) row.classList.add('selected');
  return row;
}

/** Reads the list again; calls made while one is in flight run once after it. */
function refreshServers() {
  if (state.listing) {
    state.listAgain = true;
    return state.listing;
  }
  const session = state.session;
  state.listing = (async () => {
    try {
      do {
        state.listAgain = false;
        const servers = await allServers();
        if (session !== state.session) return;
        state.servers = new Map(servers.map((s) => [s.id, s]));
        renderServers();
        if (state.selected !== null && !state.servers.has(state.selected)) unselect();
      } while (state.listAgain);
    } catch (error) {
      if (session === state.session) fail(error);
    } finally {
      state.listing = null;
    }
  })();
  return state.listing;
}

async function act(id, action) {
  const server = state.servers.get(id);
  if (action === 'purge') {
    const name = server ? server.name : '';
    if (!window.confirm(`Purge server ${id} ${name}? Its data is deleted for good.`)) return;
  }
  const session = state.session;
  try {
    const path = `/v1/servers/${encodeURIComponent(id)}`;
    const reply = action === 'delete' ? await api('DELETE', path) : await api('POST', `${path}/${action}`);
    if (session !== state.session) return;
    clearError();
    const warning = reply.warning ? ` (${reply.warning})` : '';
    notice(`${action} of server ${id} accepted: job ${reply.job.id}${warning}`);
  } catch (error) {
    if (session !== state.session) return;
    fail(error);
  }
  refreshServers();
  if (state.selected === id) refreshJobs();
}

async function create(event) {
  event.preventDefault();
  const body = { name: $('create-name').value };
  const cpus = $('create-cpus').value.trim();
  const memory = $('create-memory').value.trim();
  if (cpus !== '') body.cpus = Number(cpus);
  if (memory !== '') body.memory_mb = Number(memory);
  const session = state.session;
  try {
    const reply = await api('POST', '/v1/servers', body);
    if (session !== state.session) return;
    clearError();
    state.servers.set(reply.server.id, reply.server);
    renderServers();
    $('create-form').reset();
    notice(`Server ${reply.server.id} is being created: job ${reply.job.id}`);
  } catch (error) {
    if (session !== state.session) return;
    fail(error);
  }
  // The events may have overtaken the answer: the list is newer than both.
  refreshServers();
}

// --- one server's jobs and containers --------------------------------------

function select(id) {
  state.selected = id;
  const server = state.servers.get(id);
  $('details-title').textContent = `Server ${id}${server ? ` — ${server.name}` : ''}`;
  $('details').hidden = false;
  $('details').dataset.serverId = id;
  renderServers();
  refreshJobs();
  refreshContainers();
}

function unselect() {
  state.selected = null;
  $('details').hidden = true;
  delete $('details').dataset.serverId;
  $('job-rows').replaceChildren();
  $('container-rows').replaceChildren();
  renderServers();
}

async function refreshJobs() {
  const id = state.selected;
  const session = state.session;
  if (id === null) return;
  try {
    const reply = await api('GET', `/v1/servers/${encodeURIComponent(id)}/jobs`);
    if (session !== state.session || id !== state.selected) return;
    const rows = reply.jobs.map((job) =>
      el(
        'tr',
        { 'data-job-id': job.id, 'data-status': job.status },
        el('td', { title: job.id }, when(job.created_at)),
        el('td', {}, job.action),
        el('td', { class: 'status' }, badge(job.status)),
        el('td', {}, job.attempts),
        el('td', {}, job.origin),
        el('td', { class: 'last-error' }, job.error ?? ''),
      ),
    );
    $('job-rows').replaceChildren(...rows);
    $('no-jobs').hidden = rows.length > 0;
  } catch (error) {
    if (session === state.session) fail(error);
  }
}

async function refreshContainers() {
  const id = state.selected;
  const session = state.session;
  if (id === null) return;
  try {
    const reply = await api('GET', `/v1/servers/${encodeURIComponent(id)}/containers`);
    if (session !== state.session || id !== state.selected) return;
    const rows = reply.containers.map((c) =>
      el(
        'tr',
        { 'data-docker-id': c.docker_id },
        el('td', {}, c.names),
        el('td', {}, c.image),
        el('td', {}, c.state),
        el('td', {}, c.status),
        el('td', {}, c.ports),
      ),
    );
    $('container-rows').replaceChildren(...rows);
    $('no-containers').hidden = rows.length > 0;
  } catch (error) {
    // A server that went away while selected is no error worth showing.
    if (session === state.session && !(error instanceof ApiError && error.status === 404)) fail(error);
  }
}

// --- hosts (admins) --------------------------------------------------------

async function refreshHosts() {
  const session = state.session;
  try {
    const reply = await api('GET', '/v1/hosts');
    if (session !== state.session) return;
    const rows = reply.hosts.map((h) => {
      const sync = h.last_sync
        ? `${when(h.last_sync.at)}: ${h.last_sync.containers} containers, ${h.last_sync.changed} changed, ` +
          `${h.last_sync.orphans.length} orphans`
        : '—';
      return el(
        'tr',
        { 'data-host': h.host },
        el('td', {}, h.host),
        el('td', {}, badge(h.alive ? 'alive' : 'dead')),
        el('td', {}, h.degraded ? `degraded: ${h.degraded}` : 'healthy'),
        el('td', {}, h.capacity ?? '—'),
        el('td', {}, sync),
      );
    });
    $('host-rows').replaceChildren(...rows);
    $('hosts').hidden = false;
  } catch (error) {
    if (session !== state.session) return;
    // Not an admin: the route answers 404 and the section stays hidden.
    if (error instanceof ApiError && error.status === 404) {
      $('hosts').hidden = true;
      return;
    }
    fail(error);
  }
}

// --- the event stream ------------------------------------------------------

/** Calls `onEvent(type, data, id)` for each event of an SSE body until it ends. */
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let type = '';
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split('\n');
    buffer = lines.pop();
    for (let line of lines) {
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length > 0) onEvent(type || 'message', data.join('\n'), id);
        type = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue; // a keep-alive comment
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? '' : line.slice(colon + 1);
      if (text.startsWith(' ')) text = text.slice(1);
      if (field === 'event') type = text;
      else if (field === 'data') data.push(text);
      else if (field === 'id' && !text.includes('\0')) id = text;
    }
  }
}

function onEvent(type, text, id) {
  if (id !== null) state.lastEventId = id;
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return;
  }
  if (type === 'server') {
    const server = state.servers.get(data.server_id);
    if (data.status === 'purged') {
      state.servers.delete(data.server_id);
      if (state.selected === data.server_id) unselect();
    } else if (server) {
      state.servers.set(data.server_id, { ...server, status: data.status });
    }
    renderServers();
    // The rest of the row (host, last error, a server made elsewhere) from the list.
    refreshServers();
  } else if (type === 'job' && data.server_id === state.selected) {
    clearTimeout(state.jobsTimer);
    state.jobsTimer = setTimeout(refreshJobs, 100);
  }
}

async function follow(session, signal) {
  while (session === state.session) {
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
      if (state.lastEventId !== null) headers['Last-Event-ID'] = state.lastEventId;
      const response = await fetch('/v1/events', { headers, signal, cache: 'no-store' });
      if (!response.ok) await readReply(response);
      setLive('live');
      // What changed before the stream began, or while it was down, is in a fresh list.
      refreshServers();
      if (state.selected !== null) refreshJobs();
      await readEvents(response.body, onEvent);
      throw new Error('the event stream ended');
    } catch (error) {
      if (signal.aborted || session !== state.session) return;
      if (error instanceof ApiError && error.status === 401) {
        fail(error);
        return;
      }
      // An id the api no longer takes: start again from now (the list catches up).
      if (error instanceof ApiError && error.status === 400) state.lastEventId = null;
      setLive('reconnecting', error.message);
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

// --- signing in and out ----------------------------------------------------

async function start(token) {
  state.token = token;
  state.session += 1;
  const session = state.session;
  let servers;
  try {
    servers = await allServers();
  } catch (error) {
    if (session !== state.session) return;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showError(error instanceof ApiError && error.status === 401 ? `Sign-in refused: ${error.message}` : error.message);
    return;
  }
  if (session !== state.session) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  clearError();
  $('token').value = '';
  $('signin').hidden = true;
  $('dashboard').hidden = false;
  $('sign-out').hidden = false;
  state.servers = new Map(servers.map((s) => [s.id, s]));
  renderServers();
  state.lastEventId = null;
  state.stream = new AbortController();
  follow(session, state.stream.signal);
  refreshHosts();
  state.timers.push(
    setInterval(() => {
      if (!$('hosts').hidden) refreshHosts();
    }, HOSTS_EVERY_MS),
    setInterval(refreshContainers, CONTAINERS_EVERY_MS),
  );
}

function signOut() {
  state.session += 1;
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.timers.forEach(clearInterval);
  state.timers = [];
  clearTimeout(state.jobsTimer);
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  state.servers = new Map();
  state.selected = null;
  state.lastEventId = null;
  for (const id of ['server-rows', 'job-rows', 'container-rows', 'host-rows']) $(id).replaceChildren();
  $('details').hidden = true;
  $('hosts').hidden = true;
  $('dashboard').hidden = true;
  $('sign-out').hidden = true;
  $('notice').hidden = true;
  $('signin').hidden = false;
  clearError();
  setLive('off');
}

// --- wiring ----------------------------------------------------------------

$('signin-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token').value.trim();
  if (token) start(token);
});
$('sign-out').addEventListener('click', () => signOut());
$('create-form').addEventListener('submit', create);
$('server-rows').addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-server-id]');
  if (!row) return;
  const id = Number(row.dataset.serverId);
  const button = event.target.closest('button[data-action]');
  if (button) act(id, button.dataset.action);
  else select(id);
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) start(saved);
