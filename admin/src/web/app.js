'use strict';
/*
 * Herald admin page: plain ES2020, no framework. API data reaches the DOM only through
 * textContent / attributes, never innerHTML (campaign names are user input).
 *
 *   helpers ....... $(), el(), setText(), setAttr(), notice()
 *   api() ......... fetch wrapper: Bearer key, JSON, throws ApiError; a 401 signs out
 *   session ....... signIn(), signOut(), showKeyForm(), refuseKeyInUrl(); the key lives in
 *                   sessionStorage (this tab only), entered in the form
 *   pages ......... newPager(), pageQuery(), turnPage(), showPager(): the
 *                   API's cursor pages (`{items, next_cursor}`), Previous going back to a
 *                   cursor already seen
 *   list .......... pollCampaigns() every 1 s (filters: status, tenant, name) ->
 *                   renderCampaigns() -> createRow()/updateRow()
 *   actions ....... runAction(): POST /campaigns/{id}/{start|pause|resume|cancel}
 *   detail ........ openDetail(), pollDetail() every 1 s -> renderDetail() and
 *                   renderRecipients() (filters: state, address), closeDetail()
 *   sections ...... loadSection(): a collapsible section's paged list (contacts, messages,
 *                   suppressions), read when opened and when its filters change
 *   contacts ...... loadContacts() when the section is opened or its filters change; eraseAddress()
 *   messages ...... loadMessages() (transactional messages) when opened, filtered or refreshed
 *   suppressions .. loadSuppressions() when opened or filtered; addSuppressions(),
 *                   removeSuppression()
 *   webhook ....... loadWebhook() (one tenant's: an operator picks it) when opened;
 *                   setWebhook() (the secret shown once), removeWebhook(),
 *                   recoverWebhookEvents(), testWebhook(); its events (a paged
 *                   section of its own) loadWebhookEvents() when opened or filtered
 *   create form ... loadFormOptions(), fillTenants(), fillProviders() (carries()), readForm(),
 *                   submitCampaign() (create, then upload the file), showFormErrors()
 *   formatting .... formatEta(), formatMs(), formatRate(), formatTime(), shortId()
 *
 * Polls chain setTimeouts, and a refresh asked for while one is on its way runs after it,
 * so requests never overlap; state.session / state.detailGen are bumped on sign-out or
 * panel change, and answers that arrive later are dropped. A hidden tab asks nothing; a
 * finished campaign's panel is asked again every SETTLED_MS only (receipts still come).
 * A key of access `send` (403 on the campaigns) is shown the messages only.
 */

const API = '/api/v1';
const KEY_STORAGE = 'herald.apiKey';
// The last create's body and idempotency key while its answer is not known (kept across a
// reload of the page, as the key is, so that sending the same form again makes no second
// draft).
const CREATE_STORAGE = 'herald.createKey';
const REFRESH_MS = 1000;
const SETTLED_MS = 10000; // a completed or cancelled campaign's panel
const CAMPAIGNS_PER_PAGE = 50;
const RECIPIENTS_PER_PAGE = 20;
const CONTACTS_PER_PAGE = 25;
const MESSAGES_PER_PAGE = 25;
const SUPPRESSIONS_PER_PAGE = 25;
const WEBHOOK_EVENTS_PER_PAGE = 20;
const TYPING_MS = 300; // a search box is read once typing pauses
const ACTIONS = [ // [action, label, statuses that allow it, past tense]
  ['start', 'Start', ['draft'], 'started'],
  ['pause', 'Pause', ['running', 'scheduled'], 'paused'],
  ['resume', 'Resume', ['paused'], 'resumed'],
  ['cancel', 'Cancel', ['draft', 'scheduled', 'running', 'paused'], 'cancelled'],
];
const COUNTS = ['total', 'pending', 'queued', 'sending', 'unknown', 'sent', 'failed', 'cancelled', 'expired'];
const UPLOAD_TYPES = {
  csv: 'text/csv', ndjson: 'application/x-ndjson', jsonl: 'application/x-ndjson', json: 'application/json',
};

const state = {
  session: 0, rows: new Map(), campaigns: new Map(),
  listTimer: 0, listBusy: false, listAgain: false, listFailing: false, actionsDone: 0,
  detailId: null, shownId: null, detailGen: 0, detailTimer: 0, detailErrors: '',
  detailBusy: false, detailAgain: false, detailFailed: null, sendOnly: false,
  tenants: [], providers: [], providersError: '', retryDraft: null, noticeTimer: 0,
  campaignPages: newPager(), recipientPages: newPager(), recipientsShown: '',
  contactPages: newPager(), contactsGen: 0, typing: new Map(),
  messagePages: newPager(), messagesGen: 0,
  suppressionPages: newPager(), suppressionsGen: 0, webhookGen: 0,
  webhookEventPages: newPager(), webhookEventsGen: 0, formGen: 0,
};

/* ---------- helpers ---------- */

const $ = (sel) => document.querySelector(sel);
const enc = encodeURIComponent;
const num = (v) => (Number.isFinite(v) ? v : 0);
const finished = (p) => num(p.sent) + num(p.failed) + num(p.cancelled) + num(p.expired);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setText(node, text) {
  if (node.textContent !== String(text)) node.textContent = text;
}

function setAttr(node, name, value) {
  if (node.getAttribute(name) !== String(value)) node.setAttribute(name, value);
}

function notice(message, kind = 'info') {
  const box = $('#notice');
  clearTimeout(state.noticeTimer);
  box.textContent = message || '';
  box.className = `notice notice-${kind}`;
  box.hidden = !message;
  if (message && kind === 'ok') state.noticeTimer = setTimeout(() => notice(''), 8000);
}

/* ---------- api ---------- */

// What went wrong, in the API's words: a field's error says which and why (its message
// alone only names the field: "invalid `recipients`").
function describe(e) {
  const fields = (e && e.fields) || [];
  if (!fields.length) return (e && e.message) || 'Request failed';
  return fields.map((f) => (f.field ? `${f.field}: ${f.reason}` : String(f.reason ?? ''))).join('; ');
}

class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    const d = detail || {};
    this.status = status;
    this.fields = Array.isArray(d.fields) ? d.fields : [];
    this.rows = Array.isArray(d.rows) ? d.rows : [];
    this.errorRows = Number.isFinite(d.error_rows) ? d.error_rows : this.rows.length;
  }
}

// api('GET', '/campaigns'); api('POST', path, {json}) or api('POST', path, {body, type});
// `headers` adds to the request's own.
async function api(method, path, { json, body, type, headers: extra = {} } = {}) {
  const gen = state.session;
  const key = sessionStorage.getItem(KEY_STORAGE);
  // Signed out meanwhile (an action's answer came after it, and reloads): nothing to ask.
  if (!key) throw new ApiError(401, 'Not signed in.');
  const headers = { ...extra, Authorization: `Bearer ${key}` };
  if (json !== undefined) { body = JSON.stringify(json); type = 'application/json'; }
  if (type) headers['Content-Type'] = type;
  let res;
  try {
    res = await fetch(API + path, { method, headers, body, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'Network error: the admin server could not be reached.');
  }
  const text = await res.text().catch(() => '');
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
  if (res.ok) return data;
  const err = data && typeof data.error === 'object' ? data.error : null;
  const message = (err && err.message)
    || `HTTP ${res.status} ${res.statusText}${text && !data ? `: ${text.slice(0, 200)}` : ''}`.trim();
  if (res.status === 401 && gen === state.session) {
    signOut(`The API key was rejected (${message}). Enter a valid key.`);
  }
  throw new ApiError(res.status, message, err);
}

/* ---------- session ---------- */

// A key in a link ends up in browser history, bookmarks and proxies' logs: it is never
// used, only removed from the address bar, and the form asks for it instead.
function refuseKeyInUrl() {
  const url = new URL(location.href);
  if (!url.searchParams.has('key')) return false;
  url.searchParams.delete('key');
  history.replaceState(history.state, '', url.pathname + url.search + url.hash);
  return true;
}

function signIn() {
  state.session++;
  state.listBusy = false;
  $('#key-section').hidden = true;
  $('#app').hidden = false;
  $('#sign-out').hidden = false;
  pollCampaigns();
  loadFormOptions();
  openLinked();
}

// A shared or reloaded link to a campaign (`#campaign-<id>`) opens it; one that names no
// campaign this key sees closes again, saying so.
function openLinked() {
  const linked = /^#campaign-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(window.location.hash.toLowerCase());
  if (linked && linked[1] !== state.detailId) openDetail(linked[1]);
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.session++;
  clearTimeout(state.listTimer);
  closeDetail();
  state.rows.clear();
  state.retryDraft = null;
  sessionStorage.removeItem(CREATE_STORAGE);
  // The next key may see other tenants: its lists start unfiltered, on their first page.
  for (const sel of ['#f-status', '#f-tenant', '#f-name', '#k-tenant', '#k-address', '#m-state', '#m-to',
    '#s-tenant', '#s-channel', '#s-address', '#w-new-url', '#sa-addresses', '#sa-reason', '#we-delivery']) $(sel).value = '';
  pagerReset(state.campaignPages);
  pagerReset(state.contactPages);
  pagerReset(state.messagePages);
  pagerReset(state.suppressionPages);
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing.clear();
  state.contactsGen++; // drops a contacts answer still on its way
  $('#contacts').open = false;
  $('#contact-list tbody').replaceChildren();
  state.messagesGen++;
  $('#messages').open = false;
  $('#message-list tbody').replaceChildren();
  state.suppressionsGen++;
  $('#suppressions').open = false;
  $('#suppression-list tbody').replaceChildren();
  state.webhookGen++;
  $('#webhook').open = false;
  $('#webhook-events').open = false;
  clearWebhook();
  setStatus($('#sa-status'), '');
  // The last key's tenants and providers leave every select too: the page shows at once
  // at the next sign-in, before that key's lists arrive.
  state.formGen++;
  fillTenants(null, '');
  state.providers = [];
  state.providersError = '';
  fillProviders();
  $('#campaigns tbody').replaceChildren();
  showSendOnly(false);
  // Nothing of the last key's form is left for the next (a name, a file, a status).
  $('#create-campaign').reset();
  setFormStatus('');
  showFormErrors(null);
  $('#app').hidden = true;
  $('#sign-out').hidden = true;
  notice('');
  showKeyForm(message);
}

function showKeyForm(message) {
  $('#key-section').hidden = false;
  const msg = $('#key-message');
  msg.textContent = message || '';
  msg.hidden = !message;
  $('#api-key').value = '';
  $('#api-key').focus();
}

// A key of access `send` reaches the messages API only (403 on everything else): the page
// shows it the messages, and stops asking for what it may not see.
function showSendOnly(on) {
  state.sendOnly = on;
  for (const sel of ['#list-section', '#create-section', '#contacts-section', '#suppressions-section', '#webhook-section']) $(sel).hidden = on;
  if (!on) return;
  clearTimeout(state.listTimer);
  closeDetail();
  notice('This key has access “send”: it may send, read and cancel messages only, so only the messages are shown.', 'info');
  if (!$('#messages').open) $('#messages').open = true; // its toggle loads them
}

/* ---------- cursor pages ---------- */

// cursors[i] starts page i (null: the first page); `next` is what the shown page handed out.
// `before`: the pager as it was before a turn whose page has not come yet (undoTurn).
function newPager() {
  return { cursors: [null], index: 0, next: null, before: null };
}

function pagerReset(p) {
  p.cursors = [null];
  p.index = 0;
  p.next = null;
  p.before = null;
}

// `next` is unknown until the new page arrives: a second click meanwhile does nothing.
function pagerForward(p) {
  if (!p.next) return false;
  p.cursors = p.cursors.slice(0, p.index + 1);
  p.cursors.push(p.next);
  p.index += 1;
  p.next = null;
  return true;
}

function pagerBack(p) {
  if (!p.index) return false;
  p.index -= 1;
  p.next = p.cursors[p.index + 1];
  return true;
}

// `?filter=…&cursor=…&limit=…` for the pager's current page; empty filters are left out.
function pageQuery(filters, p, limit) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  const cursor = p.cursors[p.index];
  if (cursor) q.set('cursor', cursor);
  q.set('limit', String(limit));
  return `?${q}`;
}

function showPager(p, prefix) {
  $(`#${prefix}-prev`).disabled = !p.index;
  $(`#${prefix}-next`).disabled = !p.next;
  setText($(`#${prefix}-page`), `Page ${p.index + 1}`);
  $(`#${prefix}-pager`).hidden = !p.index && !p.next;
}

// A page arrived: remember where the next one starts. A page emptied under us (its items
// finished or were filtered away) steps back, so the list never strands on a blank page.
function pageArrived(p, page) {
  p.before = null;
  const items = page && Array.isArray(page.items) ? page.items : [];
  p.next = (page && page.next_cursor) || null;
  if (!items.length && p.index) { pagerBack(p); return null; }
  return items;
}

// The Older/Newer (Next/Previous) buttons of the list `prefix`: move, then `reload` it.
function turnPage(p, prefix, forward, reload) {
  const before = { cursors: p.cursors, index: p.index, next: p.next };
  if (!(forward ? pagerForward(p) : pagerBack(p))) return;
  p.before = before;
  showPager(p, prefix);
  reload();
}

// The page moved to could not be read: back to the one still shown, as it was.
function undoTurn(p, prefix) {
  if (!p.before) return;
  Object.assign(p, p.before);
  p.before = null;
  showPager(p, prefix);
}

// Runs `fn` once typing in the search box `box` pauses.
function afterTyping(box, fn) {
  clearTimeout(state.typing.get(box));
  state.typing.set(box, setTimeout(fn, TYPING_MS));
}

/* ---------- campaign list ---------- */

function campaignFilters() {
  return { status: $('#f-status').value, tenant_id: $('#f-tenant').value, name: $('#f-name').value.trim() };
}

function filtersChanged() {
  pagerReset(state.campaignPages);
  refreshCampaigns();
}

function refreshCampaigns() {
  if (state.listBusy) { state.listAgain = true; return; }
  pollCampaigns();
}

async function pollCampaigns() {
  const gen = state.session;
  clearTimeout(state.listTimer);
  if (document.hidden && !state.listAgain) { // asked again once the tab is shown
    state.listTimer = setTimeout(pollCampaigns, REFRESH_MS);
    return;
  }
  state.listBusy = true;
  state.listAgain = false;
  try {
    const pages = state.campaignPages;
    const query = () => pageQuery(campaignFilters(), pages, CAMPAIGNS_PER_PAGE);
    const asked = query();
    const actionsBefore = state.actionsDone;
    const page = await api('GET', `/campaigns${asked}`);
    if (gen !== state.session) return;
    // The filters or the page changed while this was on its way: it answers another question.
    // An action that ended meanwhile may be missing from it: drawn, its row would show the
    // old status's buttons until the next refresh.
    const current = asked === query() && actionsBefore === state.actionsDone;
    const list = current ? pageArrived(pages, page) : null;
    if (list === null) {
      state.listAgain = true; // read the page now shown at once
    } else {
      renderCampaigns(list);
      showPager(pages, 'campaigns');
    }
    if (state.listFailing && $('#notice').textContent.startsWith('Could not refresh')) notice('');
    state.listFailing = false;
  } catch (e) {
    if (gen !== state.session || e.status === 401) return;
    if (e.status === 403) { state.listBusy = false; showSendOnly(true); return; }
    undoTurn(state.campaignPages, 'campaigns');
    state.listFailing = true;
    notice(`Could not refresh the campaigns: ${describe(e)} (retrying)`, 'error');
  } finally {
    if (gen === state.session) state.listBusy = false;
  }
  if (gen === state.session) state.listTimer = setTimeout(pollCampaigns, state.listAgain ? 0 : REFRESH_MS);
}

// Updates rows in place, keyed by id, in the API's order (newest first): no flicker.
function renderCampaigns(list) {
  const tbody = $('#campaigns tbody');
  state.campaigns = new Map();
  let prev = null;
  for (const c of list) {
    if (!c || !c.id || state.campaigns.has(c.id)) continue;
    state.campaigns.set(c.id, c);
    let tr = state.rows.get(c.id);
    if (!tr) state.rows.set(c.id, (tr = createRow(c.id)));
    updateRow(tr, c);
    const expected = prev ? prev.nextSibling : tbody.firstChild;
    if (expected !== tr) tbody.insertBefore(tr, expected);
    prev = tr;
  }
  for (const [id, tr] of state.rows) {
    if (!state.campaigns.has(id)) { tr.remove(); state.rows.delete(id); }
  }
  $('#campaigns-empty').hidden = state.campaigns.size > 0;
  const filtered = Object.values(campaignFilters()).some(Boolean);
  setText($('#campaigns-empty'), filtered ? 'No campaigns match these filters.' : 'No campaigns yet. Create one with the form.');
}

function createRow(id) {
  const tr = el('tr');
  tr.dataset.campaignId = id;
  const c = {
    link: el('a', 'campaign-link'), tenant: el('span', 'tenant'), channel: el('td', 'channel'),
    status: el('span', 'status'), bar: el('progress', 'campaign-progress'), counts: el('span', 'counts'),
    rate: el('td', 'rate num'), actions: el('td', 'actions'),
  };
  c.link.href = `#campaign-${id}`;
  const td = (cls, ...kids) => { const n = el('td', cls); n.append(...kids); return n; };
  tr.append(td('name', c.link), td('', c.tenant), c.channel, td('', c.status),
    td('progress-cell', c.bar, c.counts), c.rate, c.actions);
  tr.cells_ = c;
  return tr;
}

function updateRow(tr, c) {
  const cells = tr.cells_;
  const p = c.progress || {};
  const status = c.status || p.status || 'unknown';
  const total = num(p.total);
  setText(cells.link, c.name || '(unnamed)');
  setText(cells.tenant, c.tenant_name || shortId(c.tenant_id));
  setAttr(cells.tenant, 'title', c.tenant_id || '');
  setText(cells.channel, c.channel || '');
  setText(cells.status, status);
  setAttr(cells.status, 'class', `status status-${status}`);
  // The reason is kept after a cancel: it says why only while the campaign is paused.
  const pausedBy = status === 'paused' ? p.pause_reason : null;
  setAttr(cells.status, 'title', pausedBy ? `Paused by Herald: ${pausedBy}` : status);
  setAttr(cells.bar, 'max', total);
  setAttr(cells.bar, 'value', finished(p));
  setAttr(cells.bar, 'aria-label', `${finished(p)} of ${total} finished`);
  const d = p.delivery || {};
  setText(cells.counts, `sent ${num(p.sent)} / ${total}${num(d.delivered) ? ` · ${num(d.delivered)} delivered` : ''}`);
  setAttr(cells.counts, 'title', `${num(p.failed)} failed, ${num(p.expired)} expired, ${num(d.undelivered)} undelivered`);
  setText(cells.rate, formatRate(p.send_rate));
  tr.classList.toggle('selected', c.id === state.detailId);
  if (tr.dataset.status !== status) { // rebuild the buttons only when the status changes
    tr.dataset.status = status;
    cells.actions.replaceChildren(...ACTIONS.filter((a) => a[2].includes(status)).map(([action, label]) => {
      const b = el('button', `action-${action}`, label);
      b.type = 'button';
      b.dataset.action = action;
      return b;
    }));
  }
}

function onListClick(ev) {
  const tr = ev.target.closest('tr[data-campaign-id]');
  if (!tr) return;
  if (ev.target.closest('a.campaign-link')) {
    ev.preventDefault();
    openDetail(tr.dataset.campaignId);
  }
  const button = ev.target.closest('button[data-action]');
  if (button && !button.disabled) runAction(tr.dataset.campaignId, button.dataset.action);
}

/* ---------- actions ---------- */

function startQuestion(name, progress, segment) {
  // A segment's audience is drawn from its contacts at the start: none are counted before.
  if (segment) return `Start campaign “${name}”? The contacts its segment picks will be sent to, from its start time if it has one.`;
  const total = progress ? Number(progress.total) || 0 : null;
  if (total === 0) return `Start campaign “${name}”? It has no recipients yet: the start will be refused until some are uploaded.`;
  const who = total === null
    ? 'Its recipients'
    : `Its ${total.toLocaleString()} recipient${total === 1 ? '' : 's'}`;
  return `Start campaign “${name}”? ${who} will be sent to, from its start time if it has one.`;
}

function cancelQuestion(name, progress) {
  const waiting = progress
    ? ['pending', 'queued'].reduce((n, k) => n + (Number(progress[k]) || 0), 0)
    : null;
  const what = waiting === null
    ? 'Its recipients still waiting'
    : `Its ${waiting.toLocaleString()} recipient${waiting === 1 ? '' : 's'} still waiting`;
  return `Cancel campaign “${name}”? ${what} will never be sent; this cannot be undone.`;
}

async function runAction(id, action) {
  const row = state.rows.get(id);
  const buttons = row ? [...row.querySelectorAll('.actions button')] : [];
  const campaign = state.campaigns.get(id) || {};
  const name = campaign.name || id;
  // Cancelling cannot be undone, and its button sits beside Pause; starting sends to
  // everyone, at one click from the list.
  if (action === 'cancel' && !confirm(cancelQuestion(name, campaign.progress))) return;
  if (action === 'start' && !confirm(startQuestion(name, campaign.progress, campaign.segment_id))) return;
  buttons.forEach((b) => { b.disabled = true; });
  const session = state.session;
  try {
    const c = await api('POST', `/campaigns/${enc(id)}/${action}`, { json: {} });
    if (session !== state.session) return; // signed out meanwhile: nothing of it is shown
    if (c && c.progress && row && row.isConnected) updateRow(row, c);
    const done = ACTIONS.find((a) => a[0] === action)[3];
    notice(`Campaign “${name}” ${done}${c && c.status && c.status !== done ? ` (now ${c.status})` : ''}.`, 'ok');
  } catch (e) {
    if (session !== state.session) return;
    if (e.status !== 401) notice(`Could not ${action} campaign “${name}”: ${describe(e)}`, 'error');
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    state.actionsDone += 1;
  }
  refreshCampaigns();
  if (state.detailId === id) refreshDetail();
}

/* ---------- detail panel ---------- */

function openDetail(id) {
  state.detailId = id;
  state.detailErrors = '';
  state.detailFailed = null;
  for (const [rid, tr] of state.rows) tr.classList.toggle('selected', rid === id);
  setText($('#detail-title'), (state.campaigns.get(id) || {}).name || 'Campaign');
  $('#detail-error').hidden = true;
  if (id !== state.shownId) { // another campaign: no stale values while loading
    document.querySelectorAll('#detail dl [id]').forEach((n) => { n.textContent = ''; });
    $('#detail-errors tbody').replaceChildren();
    $('#recipients tbody').replaceChildren();
    state.recipientsShown = '';
    $('#r-state').value = '';
    $('#r-address').value = '';
    pagerReset(state.recipientPages);
  }
  $('#detail').hidden = false;
  $('#detail').scrollIntoView({ block: 'nearest' });
  // The address names the campaign shown, so it can be shared or reloaded.
  if (window.location.hash !== `#campaign-${id}`) history.replaceState(null, '', `#campaign-${id}`);
  refreshDetail();
}

function closeDetail() {
  state.detailId = null;
  if (window.location.hash) history.replaceState(null, '', window.location.pathname + window.location.search);
  state.detailGen++;
  clearTimeout(state.detailTimer);
  $('#detail').hidden = true;
  for (const tr of state.rows.values()) tr.classList.remove('selected');
}

function refreshDetail() {
  state.detailGen++; // drops the answer of a poll still in flight, which then asks again
  pollDetail();
}

async function pollDetail() {
  clearTimeout(state.detailTimer);
  const id = state.detailId;
  if (!id) return;
  if (state.detailBusy) { state.detailAgain = true; return; }
  state.detailBusy = true;
  state.detailAgain = false;
  const gen = state.detailGen;
  let delay = REFRESH_MS;
  let again = false;
  try {
    if (document.hidden) return; // asked again once the tab is shown
    const pages = state.recipientPages;
    const filters = { state: $('#r-state').value, address: $('#r-address').value.trim() };
    const [c, recipients] = await Promise.all([
      api('GET', `/campaigns/${enc(id)}`),
      api('GET', `/campaigns/${enc(id)}/recipients${pageQuery(filters, pages, RECIPIENTS_PER_PAGE)}`),
    ]);
    if (gen !== state.detailGen) return;
    // The failures grouped by reason read every failed recipient: asked again only when
    // their number moved.
    const failed = num(((c && c.progress) || {}).failed);
    let errors = null;
    if (state.detailFailed !== `${id}:${failed}`) {
      errors = await api('GET', `/campaigns/${enc(id)}/errors`);
      if (gen !== state.detailGen) return;
      state.detailFailed = `${id}:${failed}`;
    }
    renderDetail(c || {}, Array.isArray(errors) ? errors : null);
    const list = pageArrived(pages, recipients);
    if (list === null) {
      again = true;
    } else {
      renderRecipients(list);
      showPager(pages, 'recipients');
    }
    $('#detail-error').hidden = true;
    if (['completed', 'cancelled'].includes((c && c.status) || '')) delay = SETTLED_MS;
  } catch (e) {
    if (gen !== state.detailGen) return;
    if (e.status === 401) { delay = null; return; }
    if (e.status === 404 || e.status === 403) {
      closeDetail();
      notice(e.status === 404 ? 'That campaign no longer exists (or is not visible to this key).' : describe(e), 'error');
      return;
    }
    undoTurn(state.recipientPages, 'recipients');
    $('#detail-error').textContent = `Could not refresh: ${describe(e)}`;
    $('#detail-error').hidden = false;
  } finally {
    state.detailBusy = false;
    // Another question was asked meanwhile (a filter, a page, an action): answered now.
    if (gen !== state.detailGen || state.detailAgain) again = true;
    if (state.detailId && delay !== null) state.detailTimer = setTimeout(pollDetail, again ? 0 : delay);
  }
}

function renderDetail(c, errors) {
  const p = c.progress || {};
  const status = c.status || p.status || 'unknown';
  const provider = state.providers.find((x) => x.id === c.provider_id);
  state.shownId = c.id;
  setText($('#detail-title'), c.name || '(unnamed)');
  setText($('#d-id'), c.id || '');
  setText($('#d-status'), status);
  setAttr($('#d-status'), 'class', `status status-${status}`);
  const why = $('#d-pause-reason');
  const pausedBy = status === 'paused' ? p.pause_reason : null;
  why.hidden = !pausedBy;
  setText(why, pausedBy ? `Paused by Herald: ${pausedBy}. Fix the provider, then resume.` : '');
  setText($('#d-channel'), c.channel || '—');
  setText($('#d-provider'), provider ? provider.name : shortId(c.provider_id));
  const overflow = state.providers.find((x) => x.id === c.overflow_provider_id);
  setText($('#d-overflow'), c.overflow_provider_id ? (overflow ? overflow.name : shortId(c.overflow_provider_id)) : 'none');
  setText($('#d-sent-via'), sentVia(c.by_provider));
  for (const k of COUNTS) setText($(`#d-${k}`), num(p[k]));
  const d = p.delivery || {};
  const share = (n) => (num(p.sent) ? ` (${((100 * num(n)) / num(p.sent)).toFixed(1)}%)` : '');
  setText($('#d-delivered'), `${num(d.delivered)}${share(d.delivered)}`);
  setText($('#d-read'), `${num(d.read)}${share(d.read)}`);
  setText($('#d-undelivered'), `${num(d.undelivered)}${share(d.undelivered)}`);
  setText($('#d-delivery-failed'), `${num(d.failed)}${share(d.failed)}`);
  setText($('#d-live-calls'), num(p.live_calls));
  setAttr($('#d-progress'), 'max', num(p.total));
  setAttr($('#d-progress'), 'value', finished(p));
  setText($('#d-rate'), formatRate(p.send_rate));
  setText($('#d-eta'), ['completed', 'cancelled'].includes(status) ? '—' : formatEta(p.eta_seconds));
  setText($('#d-ttfs'), formatMs(p.time_to_first_send_ms));
  setTime('#d-start', c.start_at, status === 'draft' ? 'when started' : '—');
  setTime('#d-started', p.started_at || c.started_at, '—');
  setTime('#d-expires', c.expires_at, 'never');
  const q = c.quiet_hours;
  setText($('#d-quiet'), q && q.start ? `${q.start}–${q.end}${q.time_zone ? ` (${q.time_zone})` : ''}` : 'none');
  setTime('#d-completed', p.completed_at || c.completed_at, '—');
  if (errors === null) return; // not asked again: unchanged
  const json = JSON.stringify(errors);
  if (json === state.detailErrors) return; // errors table unchanged
  state.detailErrors = json;
  $('#detail-errors tbody').replaceChildren(...errors.map((e) => {
    const tr = el('tr');
    const reason = el('td', 'reason', String(e.reason ?? ''));
    if (e.example && e.example !== e.reason) setAttr(reason, 'title', `e.g. ${e.example}`);
    tr.append(reason, el('td', 'num', num(e.count)));
    return tr;
  }));
  $('#detail-errors').hidden = !errors.length;
  $('#detail-errors-empty').hidden = errors.length > 0;
}

function renderRecipients(list) {
  const json = JSON.stringify(list);
  if (json === state.recipientsShown) return; // unchanged since the last poll
  state.recipientsShown = json;
  $('#recipients tbody').replaceChildren(...list.map((r) => {
    const tr = el('tr');
    const delivery = r.delivery_status ? `${r.delivery_status}${r.delivery_error ? ` (${r.delivery_error})` : ''}` : '—';
    const stateCell = el('td');
    stateCell.append(el('span', `status status-${r.state}`, String(r.state ?? '')));
    tr.append(el('td', 'mono', String(r.address ?? '')), stateCell, el('td', 'num', num(r.attempts)),
      el('td', '', delivery), el('td', 'reason', r.last_error || '—'));
    return tr;
  }));
  $('#recipients-empty').hidden = list.length > 0;
}

function recipientFiltersChanged() {
  pagerReset(state.recipientPages);
  if (state.detailId) refreshDetail();
}


/* ---------- paged sections ---------- */

// A collapsible section's list (contacts, messages, suppressions): read page by page while
// it is open, answers to an earlier request dropped (state[spec.gen]), `#<name>-empty`,
// `#<name>-error` and the `<name>` pager kept in step.
async function loadSection(spec) {
  if (!$(`#${spec.name}`).open) return;
  const gen = ++state[spec.gen];
  const pages = spec.pages;
  try {
    const page = await api('GET', `${spec.path}${pageQuery(spec.filters(), pages, spec.perPage)}`);
    if (gen !== state[spec.gen]) return;
    const list = pageArrived(pages, page);
    if (list === null) { loadSection(spec); return; }
    $(`${spec.table} tbody`).replaceChildren(...list.map(spec.row));
    $(`#${spec.name}-empty`).hidden = list.length > 0;
    $(`#${spec.name}-error`).hidden = true;
    showPager(pages, spec.name);
  } catch (e) {
    if (gen !== state[spec.gen] || e.status === 401) return;
    undoTurn(pages, spec.name);
    $(`#${spec.name}-error`).textContent = `Could not load the ${spec.noun}: ${describe(e)}`;
    $(`#${spec.name}-error`).hidden = false;
  }
}

/* ---------- contacts ---------- */

function loadContacts() {
  return loadSection({
    name: 'contacts', table: '#contact-list', pages: state.contactPages, gen: 'contactsGen',
    path: '/contacts', perPage: CONTACTS_PER_PAGE, noun: 'contacts',
    filters: () => ({ tenant_id: $('#k-tenant').value, address: $('#k-address').value.trim() }),
    row: (k) => {
      const tr = el('tr');
      const actions = el('td', 'actions');
      const erase = el('button', 'action-erase', 'Erase');
      erase.type = 'button';
      erase.setAttribute('aria-label', `Erase ${k.address ?? ''} from everything its tenant keeps`);
      erase.addEventListener('click', () => eraseAddress(k, erase));
      actions.append(erase);
      tr.append(el('td', 'mono', String(k.address ?? '')), el('td', '', k.tenant_name || shortId(k.tenant_id)),
        el('td', 'attributes mono', JSON.stringify(k.attributes || {})), actions);
      return tr;
    },
  });
}

// A person asking to be forgotten: the contact and every copy of its address in its
// tenant's campaigns and messages (POST /erasures).
async function eraseAddress(k, button) {
  if (!confirm(`Erase ${k.address} from everything its tenant keeps? The contact is deleted, messages still waiting to it are cancelled, and sent ones lose the address and their variables. Its opt-outs stay. This cannot be undone.`)) return;
  button.disabled = true;
  const session = state.session;
  try {
    const done = await api('POST', '/erasures', { json: { tenant_id: k.tenant_id, address: k.address } });
    if (session !== state.session) return;
    const flying = done.in_flight > 0
      ? ` ${num(done.in_flight)} in flight will never be sent again, and are erased once they end.` : '';
    notice(`${k.address} erased: ${num(done.messages)} messages (${num(done.cancelled)} cancelled unsent).${flying}`, 'ok');
  } catch (e) {
    if (session !== state.session) return;
    if (e.status !== 401) notice(`Could not erase ${k.address}: ${describe(e)}`, 'error');
  }
  loadContacts();
}

function contactFiltersChanged() {
  pagerReset(state.contactPages);
  loadContacts();
}

/* ---------- messages ---------- */

function loadMessages() {
  return loadSection({
    name: 'messages', table: '#message-list', pages: state.messagePages, gen: 'messagesGen',
    path: '/messages', perPage: MESSAGES_PER_PAGE, noun: 'messages',
    filters: () => ({ state: $('#m-state').value, to: $('#m-to').value.trim() }),
    row: (m) => {
      const tr = el('tr');
      const status = el('span', `status status-${m.state}`, String(m.state ?? ''));
      const stateCell = el('td');
      stateCell.append(status);
      const actions = el('td', 'actions');
      // Only a message still waiting can be withdrawn (the API says why not otherwise:
      // in flight, final, or waiting after a lost answer, when it may have been sent).
      if (m.state === 'pending' || m.state === 'queued') {
        const cancel = el('button', 'action-cancel', 'Cancel');
        cancel.type = 'button';
        cancel.setAttribute('aria-label', `Cancel the message to ${m.to ?? ''}`);
        cancel.addEventListener('click', () => cancelMessage(m, cancel));
        actions.append(cancel);
      }
      tr.append(el('td', 'mono', String(m.to ?? '')), stateCell,
        el('td', '', m.delivery_status || '–'), el('td', '', formatTime(m.created_at)),
        el('td', 'attributes', String(m.text ?? '')), actions);
      tr.title = m.last_error ? `Last error: ${m.last_error}` : `Message ${m.id}`;
      return tr;
    },
  });
}

async function cancelMessage(m, button) {
  if (!confirm(`Cancel the message to ${m.to ?? m.id}? It will never be sent; this cannot be undone.`)) return;
  button.disabled = true;
  const session = state.session;
  try {
    await api('POST', `/messages/${enc(m.id)}/cancel`, { json: {} });
    if (session !== state.session) return;
    notice(`Message to ${m.to ?? m.id} cancelled.`, 'ok');
  } catch (e) {
    if (session !== state.session) return;
    if (e.status !== 401) notice(`Could not cancel the message to ${m.to ?? m.id}: ${describe(e)}`, 'error');
  }
  loadMessages();
}

function messageFiltersChanged() {
  pagerReset(state.messagePages);
  loadMessages();
}

/* ---------- suppressions ---------- */

// The list's tenant filter (none: every tenant the key sees).
function suppressionTenant() {
  return $('#s-tenant-field').hidden ? '' : $('#s-tenant').value;
}

// The tenant whose list an addition goes to: the one chosen, or the only one the key sees.
function suppressionOwner() {
  if (!$('#s-tenant-field').hidden) return $('#s-tenant').value;
  return state.tenants.length === 1 ? state.tenants[0].id : '';
}

function loadSuppressions() {
  const names = () => new Map(state.tenants.map((t) => [t.id, t.name]));
  return loadSection({
    name: 'suppressions', table: '#suppression-list', pages: state.suppressionPages, gen: 'suppressionsGen',
    path: '/suppressions', perPage: SUPPRESSIONS_PER_PAGE, noun: 'suppressions',
    filters: () => ({ tenant_id: suppressionTenant(), channel: $('#s-channel').value, address: $('#s-address').value.trim() }),
    row: (x) => {
      const tr = el('tr');
      const actions = el('td', 'actions');
      const remove = el('button', 'action-remove', 'Remove');
      remove.type = 'button';
      remove.setAttribute('aria-label', `Remove ${x.address ?? ''} from the ${x.channel ?? ''} list`);
      remove.addEventListener('click', () => removeSuppression(x, remove));
      actions.append(remove);
      tr.append(el('td', 'mono', String(x.address ?? '')), el('td', '', String(x.channel ?? '')),
        el('td', '', names().get(x.tenant_id) || shortId(x.tenant_id)), el('td', '', String(x.source ?? '')),
        el('td', 'attributes', x.reason || '–'), el('td', '', formatTime(x.created_at)), actions);
      return tr;
    },
  });
}

async function removeSuppression(x, button) {
  if (!confirm(`Take ${x.address} off the ${x.channel} list? Its next message will be sent.`)) return;
  button.disabled = true;
  const session = state.session;
  try {
    await api('DELETE', `/suppressions/${enc(x.id)}`);
    if (session !== state.session) return;
    notice(`${x.address} taken off the ${x.channel} list.`, 'ok');
  } catch (e) {
    if (session !== state.session) return;
    if (e.status !== 401) notice(`Could not take ${x.address} off the list: ${describe(e)}`, 'error');
  }
  loadSuppressions();
}

async function addSuppressions(ev) {
  ev.preventDefault();
  const status = $('#sa-status');
  const addresses = $('#sa-addresses').value.split(/[\n,;]+/).map((a) => a.trim()).filter(Boolean);
  if (!addresses.length) { setStatus(status, 'Enter at least one address.', 'warn'); return; }
  const owner = suppressionOwner();
  if (!owner) {
    setStatus(status, 'Choose the tenant whose list this is (Tenant, above).', 'warn');
    return;
  }
  const body = { tenant_id: owner, channel: $('#sa-channel').value, addresses };
  const reason = $('#sa-reason').value.trim();
  if (reason) body.reason = reason;
  const session = state.session;
  $('#sa-submit').disabled = true;
  try {
    const added = await api('POST', '/suppressions', { json: body });
    if (session !== state.session) return;
    setStatus(status, `${num(added.added)} of ${num(added.received)} added (the others were listed already).`, 'ok');
    $('#sa-addresses').value = '';
    loadSuppressions();
  } catch (e) {
    if (session === state.session && e.status !== 401) setStatus(status, `Not added: ${describe(e)}`, 'warn');
  } finally {
    $('#sa-submit').disabled = false;
  }
}

function suppressionFiltersChanged() {
  pagerReset(state.suppressionPages);
  loadSuppressions();
}

function setStatus(node, text, kind) {
  node.textContent = text;
  node.className = `form-status${kind ? ` form-status-${kind}` : ''}`;
}

/* ---------- status webhook ---------- */

function webhookTenant() {
  if (!$('#w-tenant-field').hidden) return $('#w-tenant').value;
  return state.tenants.length === 1 ? state.tenants[0].id : '';
}

// Every answer below is dropped if the key or the tenant changed while it came (webhookGen,
// bumped by each request and by a change): a tenant's secret or state is never shown under
// another's, nor left for the next key.
function webhookTurn() {
  const gen = ++state.webhookGen;
  const session = state.session;
  return () => gen === state.webhookGen && session === state.session;
}

async function loadWebhook() {
  if (!$('#webhook').open) return;
  const current = webhookTurn();
  const tenant = webhookTenant();
  if (!tenant) {
    clearWebhook();
    $('#webhook-error').textContent = state.tenantsLoaded
      ? 'No tenant to show: create one first (POST /api/v1/tenants).'
      : 'The tenants could not be read yet: try again in a moment.';
    $('#webhook-error').hidden = false;
    return;
  }
  try {
    const w = await api('GET', `/tenants/${enc(tenant)}/webhook`);
    if (!current()) return;
    showWebhook(w);
    $('#webhook-error').hidden = true;
    loadWebhookEvents();
  } catch (e) {
    if (!current() || e.status === 401) return;
    // The same tenant's new secret, shown this once, stays until it is copied.
    clearWebhook({ keepSecret: true });
    $('#webhook-error').textContent = `Could not load the webhook: ${describe(e)}`;
    $('#webhook-error').hidden = false;
  }
}

function showWebhook(w) {
  const counted = (n) => (num(n) >= 100000 ? 'at least 100000' : String(num(n)));
  const when = (iso) => (iso ? formatTime(iso) : '–');
  setText($('#w-url'), w.url || 'none: the tenant\'s messages are not posted');
  setText($('#w-set'), when(w.updated_at));
  // Gone for good by its own word (410): nothing is posted until it is set again.
  setText($('#w-disabled'), w.disabled_at
    ? `since ${formatTime(w.disabled_at)}: ${w.disabled_reason || 'answered 410 Gone'}. Set it again (below) to enable it.`
    : 'no');
  setText($('#w-failing'), w.failing_since ? formatTime(w.failing_since) : 'no');
  setText($('#w-resume'), w.failing_since ? when(w.resume_at) : 'as events come');
  setText($('#w-waiting'), counted(w.waiting));
  setText($('#w-oldest'), when(w.oldest_waiting_at));
  setText($('#w-last-failure'), w.last_failure ? `${w.last_failure} (${formatTime(w.last_failed_at)})` : '–');
  setText($('#w-abandoned'), counted(w.abandoned));
  $('#webhook-state').classList.toggle('failing', Boolean(w.failing_since || w.disabled_at));
  $('#w-rotate').hidden = !w.url;
  $('#w-remove').hidden = !w.url;
  $('#w-test').hidden = !w.url || Boolean(w.disabled_at);
  $('#w-recover').hidden = !w.url || !num(w.abandoned) || Boolean(w.disabled_at);
  if (w.url && document.activeElement !== $('#w-new-url') && !$('#w-new-url').value) $('#w-new-url').value = w.url;
}

// Nothing of a tenant's webhook left on the page (another tenant's or key's comes next).
function clearWebhook({ keepSecret = false } = {}) {
  for (const sel of ['#w-url', '#w-set', '#w-disabled', '#w-failing', '#w-resume', '#w-waiting', '#w-oldest',
    '#w-last-failure', '#w-abandoned']) $(sel).textContent = '';
  $('#w-recover').hidden = true;
  $('#webhook-state').classList.remove('failing');
  $('#webhook-error').hidden = true;
  $('#w-rotate').hidden = true;
  $('#w-remove').hidden = true;
  $('#w-test').hidden = true;
  $('#w-new-url').value = '';
  if (!keepSecret) hideSecret();
  setStatus($('#w-status'), '');
  clearWebhookEvents();
}

function webhookBusy(on) {
  for (const sel of ['#w-save', '#w-rotate', '#w-remove', '#w-recover', '#w-test']) $(sel).disabled = on;
}

// One action on the chosen tenant's webhook: its buttons held while `run` (given that
// tenant and whether the page still shows it) asks the API; its answer or `failed`'s words
// in the status line; the summary read again after.
async function webhookAction(tenant, failed, run) {
  const current = webhookTurn();
  webhookBusy(true);
  try {
    const said = await run(tenant, current);
    if (!current()) return;
    setStatus($('#w-status'), said, 'ok');
  } catch (e) {
    if (!current()) return;
    if (e.status !== 401) setStatus($('#w-status'), `${failed}: ${describe(e)}`, 'warn');
  } finally {
    webhookBusy(false);
  }
  loadWebhook();
}

// Every event given up that is still kept goes again (the API takes 50,000 a request).
async function recoverWebhookEvents() {
  const tenant = webhookTenant();
  if (!tenant || !confirm('Post again every event given up (kept as long as receipts)? They are given up again a day from now if still not delivered.')) return;
  await webhookAction(tenant, 'Not posted again', async (t, current) => {
    let recovered = 0;
    for (let round = 0; round < 100; round++) {
      const r = await api('POST', `/tenants/${enc(t)}/webhook/recover`, { json: { since: '2000-01-01T00:00:00Z' } });
      if (!current()) return '';
      recovered += num(r.recovered);
      if (!r.more) break;
    }
    return `${recovered} ${recovered === 1 ? 'event' : 'events'} given up posted again.`;
  });
}

// A `webhook.test` event, posted as status events are: the events below show its posts.
async function testWebhook() {
  const tenant = webhookTenant();
  if (!tenant) return;
  await webhookAction(tenant, 'No test event', async (t) => {
    const queued = await api('POST', `/tenants/${enc(t)}/webhook/test`);
    return `Test event ${shortId(queued.id)} queued: it goes after the events already due `
      + '(while the endpoint is failing, after one probe of each event due before it, or at once when it answers again). '
      + 'Refresh: its posts show under Events.';
  });
}

async function setWebhook(rotate) {
  const tenant = webhookTenant();
  const status = $('#w-status');
  const url = $('#w-new-url').value.trim();
  if (!tenant) { setStatus(status, 'Choose a tenant first.', 'warn'); return; }
  if (rotate && !confirm('Issue a new secret? The one it replaces still signs beside it for a day, so the endpoint can change over.')) return;
  const body = { url };
  if (rotate) body.rotate_secret = true;
  hideSecret();
  const current = webhookTurn();
  webhookBusy(true);
  try {
    const w = await api('PUT', `/tenants/${enc(tenant)}/webhook`, { json: body });
    if (!current()) return;
    showWebhook(w);
    if (w.secret) {
      $('#w-secret').textContent = w.secret;
      $('#w-secret-box').hidden = false;
    }
    setStatus(status, w.secret ? 'Saved, with a new secret (below).' : 'Saved.', 'ok');
  } catch (e) {
    if (current() && e.status !== 401) setStatus(status, `Not saved: ${describe(e)}`, 'warn');
  } finally {
    webhookBusy(false);
  }
}

async function removeWebhook() {
  const tenant = webhookTenant();
  if (!tenant || !confirm('Remove the webhook? Events still waiting are dropped, and none are posted until one is set again.')) return;
  const current = webhookTurn();
  webhookBusy(true);
  try {
    await api('DELETE', `/tenants/${enc(tenant)}/webhook`);
    if (!current()) return;
    clearWebhook();
    setStatus($('#w-status'), 'Removed.', 'ok');
  } catch (e) {
    if (!current()) return;
    if (e.status !== 401) setStatus($('#w-status'), `Not removed: ${describe(e)}`, 'warn');
  } finally {
    webhookBusy(false);
  }
  loadWebhook();
}

function hideSecret() {
  $('#w-secret').textContent = '';
  $('#w-secret-box').hidden = true;
}

function webhookTenantChanged() {
  clearWebhook();
  loadWebhook();
}

// The chosen tenant's events, newest first: what was posted, and how its posts went.
function loadWebhookEvents() {
  const tenant = webhookTenant();
  if (!tenant) { clearWebhookEvents(); return undefined; }
  const delivery = { waiting: 'waiting', delivered: 'delivered', abandoned: 'given up' };
  return loadSection({
    name: 'webhook-events', table: '#webhook-event-list', pages: state.webhookEventPages, gen: 'webhookEventsGen',
    path: `/tenants/${enc(tenant)}/webhook/events`, perPage: WEBHOOK_EVENTS_PER_PAGE, noun: 'events',
    filters: () => ({ delivery: $('#we-delivery').value }),
    row: (e) => {
      const tr = el('tr');
      const m = e.message;
      const message = m ? `${shortId(m.id)} ${m.state}${m.delivery_status ? ` (${m.delivery_status})` : ''}` : '–';
      // When it was delivered or given up; while waiting, when it is next posted.
      const when = e.delivered_at || e.abandoned_at;
      const at = when ? ` ${formatTime(when)}` : (e.next_attempt_at ? ` (next ${formatTime(e.next_attempt_at)})` : '');
      const stands = el('td', '', `${delivery[e.delivery] || String(e.delivery ?? '')}${at}`);
      tr.append(el('td', 'mono', String(e.type ?? '')), el('td', '', formatTime(e.occurred_at)),
        el('td', 'mono', message), stands, el('td', 'num', String(num(e.attempts))),
        el('td', 'attributes', e.last_failure || '–'));
      tr.title = `Event ${e.id}`;
      return tr;
    },
  });
}

// Nothing of a tenant's events left (another tenant's or key's come next); its first page next.
function clearWebhookEvents() {
  state.webhookEventsGen++;
  pagerReset(state.webhookEventPages);
  $('#webhook-event-list tbody').replaceChildren();
  $('#webhook-events-empty').hidden = true;
  $('#webhook-events-error').hidden = true;
  $('#webhook-events-pager').hidden = true;
}

function webhookEventFiltersChanged() {
  pagerReset(state.webhookEventPages);
  loadWebhookEvents();
}

// Sends, cost and delivery per provider: "twilio-eu 9612 (75.93, 98.2% delivered) · backup 388 (19.40)".
function sentVia(list) {
  if (!Array.isArray(list) || !list.length) return '—';
  return list.map((s) => {
    const notes = [];
    if (typeof s.cost === 'number') notes.push(s.cost.toFixed(2));
    const d = s.delivery || {};
    if (num(d.delivered) && typeof d.delivered_rate === 'number') notes.push(`${(100 * d.delivered_rate).toFixed(1)}% delivered`);
    return `${s.provider || shortId(s.provider_id)} ${num(s.sent)}${notes.length ? ` (${notes.join(', ')})` : ''}`;
  }).join(' · ');
}

function setTime(sel, iso, fallback) {
  setText($(sel), iso ? formatTime(iso) : fallback);
  setAttr($(sel), 'title', iso || '');
}

/* ---------- create form ---------- */

async function loadFormOptions() {
  const gen = ++state.formGen; // two reloads in a row: the later's answer is the one kept
  // The retired ones too: their campaigns still name them (only the form leaves them out).
  const [tenants, providers] = await Promise.allSettled([api('GET', '/tenants'), api('GET', '/providers?retired=true')]);
  if (gen !== state.formGen) return;
  fillTenants(tenants.status === 'fulfilled' && Array.isArray(tenants.value) ? tenants.value : null,
    tenants.status === 'rejected' ? `Could not load tenants: ${describe(tenants.reason)} (Reload tenants & providers)` : '');
  const ok = providers.status === 'fulfilled';
  state.providers = ok && Array.isArray(providers.value) ? providers.value : [];
  state.providersError = ok ? '' : `Could not load providers: ${describe(providers.reason)}`;
  fillProviders();
}

function option(value, text) {
  const o = el('option', '', text);
  o.value = value;
  return o;
}

// Shown unless the key sees exactly one tenant (a tenant key). list === null: unreadable,
// and `error` says why: the field stays, saying so (hidden, an operator's form would only
// answer "tenant_id: required" with no field to fix).
function fillTenants(list, error) {
  state.tenants = list || [];
  state.tenantsLoaded = Boolean(list);
  const sel = $('#c-tenant');
  const prev = sel.value;
  sel.replaceChildren(...state.tenants.map((t) => option(t.id, `${t.name} (${shortId(t.id)})`)));
  if (list && !list.length) sel.append(option('', 'No tenants yet (POST /api/v1/tenants)'));
  if (!list && error) sel.append(option('', error));
  if (state.tenants.some((t) => t.id === prev)) sel.value = prev;
  $('#c-tenant-field').hidden = list ? list.length === 1 : !error;
  // The list filters offer the same tenants (an operator's key; a tenant key sees only its own).
  // A chosen tenant that is gone leaves its filter on all tenants, and the list is read again.
  for (const [id, changed] of [['#f-tenant', filtersChanged], ['#k-tenant', contactFiltersChanged],
    ['#s-tenant', suppressionFiltersChanged]]) {
    const filter = $(id);
    const chosen = filter.value;
    filter.replaceChildren(option('', 'All tenants'), ...state.tenants.map((t) => option(t.id, t.name)));
    if (state.tenants.some((t) => t.id === chosen)) filter.value = chosen;
    else if (chosen && list) changed();
  }
  $('#f-tenant-field').hidden = $('#c-tenant-field').hidden;
  $('#k-tenant-field').hidden = $('#c-tenant-field').hidden;
  $('#s-tenant-field').hidden = $('#c-tenant-field').hidden;
  $('#sa-tenant-note').hidden = $('#c-tenant-field').hidden;
  // A webhook is one tenant's: an operator picks which.
  const hook = $('#w-tenant');
  const hooked = hook.value;
  hook.replaceChildren(...state.tenants.map((t) => option(t.id, t.name)));
  if (state.tenants.some((t) => t.id === hooked)) hook.value = hooked;
  $('#webhook-tenant-form').hidden = $('#c-tenant-field').hidden;
  $('#w-tenant-field').hidden = $('#c-tenant-field').hidden;
  if ($('#webhook').open && hook.value !== hooked) webhookTenantChanged();
}

function currentTenantId() {
  if (!$('#c-tenant-field').hidden) return $('#c-tenant').value;
  return state.tenants.length === 1 ? state.tenants[0].id : '';
}

// Whether a provider of `kind` carries `channel`: its request is built from its kind alone
// (the server's rule, which answers 422 otherwise).
function carries(kind, channel) {
  switch (kind) {
    case 'twilio_voice': return channel === 'voice';
    case 'whatsapp': return channel === 'whatsapp';
    case 'twilio_sms': return channel !== 'voice';
    default: return true;
  }
}

// Providers of the chosen tenant that carry the chosen channel.
function fillProviders() {
  const sel = $('#c-provider');
  const prev = sel.value;
  const tenant = currentTenantId();
  const channel = $('#c-channel').value;
  const mine = state.providers.filter((p) => !p.retired_at && (!tenant || !p.tenant_id || p.tenant_id === tenant));
  const list = mine.filter((p) => carries(p.kind, channel));
  sel.replaceChildren(...list.map((p) => option(p.id, providerLabel(p))));
  const retiredOnly = !mine.length && state.providers.some((p) => p.retired_at);
  const none = mine.length ? `No provider carries ${channel}`
    : (retiredOnly ? 'Every provider is retired (POST /api/v1/providers)' : 'No providers yet (POST /api/v1/providers)');
  if (!list.length) sel.append(option('', state.providersError || none));
  if (list.some((p) => p.id === prev)) sel.value = prev;
  fillOverflow(list);
}

function providerLabel(p) {
  const cost = typeof p.cost_per_message === 'number' ? `, ${p.cost_per_message} per message` : '';
  return `${p.name}${p.kind ? ` (${p.kind}${cost})` : ''}`;
}

// Any of the tenant's providers but the primary, or none.
function fillOverflow(list) {
  const sel = $('#c-overflow');
  const prev = sel.value;
  const primary = $('#c-provider').value;
  const others = list.filter((p) => p.id !== primary);
  sel.replaceChildren(option('', 'None'), ...others.map((p) => option(p.id, providerLabel(p))));
  if (others.some((p) => p.id === prev)) sel.value = prev;
}

// Reads and checks the form: {body, file, type}, or throws an ApiError listing the fields.
function readForm() {
  const val = (sel) => $(sel).value.trim();
  const fields = [];
  const bad = (field, reason) => fields.push({ field, reason });
  const tenant = currentTenantId();
  // (None to choose when the tenants could not be read: the server says what it needs.)
  if (!$('#c-tenant-field').hidden && !tenant && state.tenants.length) bad('tenant', 'choose a tenant');
  const body = {
    name: val('#c-name'), provider_id: val('#c-provider'), channel: val('#c-channel'),
    template: $('#c-template').value,
  };
  if (tenant) body.tenant_id = tenant;
  const overflow = val('#c-overflow');
  if (overflow) body.overflow_provider_id = overflow;
  if (!body.name) bad('name', 'required');
  if (!body.provider_id) bad('provider', 'choose a provider');
  if (!body.template.trim()) bad('template', 'required');
  const batch = $('#c-batch-size');
  body.batch_size = batch.value.trim() === '' ? 1000 : Number(batch.value);
  if (batch.validity.badInput || !Number.isInteger(body.batch_size) || body.batch_size < 1) {
    bad('batch_size', 'must be a whole number ≥ 1');
  }
  // A date or time typed in part reads as empty (its `badInput` says so): left out, the
  // campaign would start at once, or never expire.
  for (const [sel, key] of [['#c-start', 'start_at'], ['#c-expires', 'expires_at'],
    ['#c-quiet-start', 'quiet hours'], ['#c-quiet-end', 'quiet hours']]) {
    if ($(sel).validity.badInput) bad(key, 'not complete: give the whole date and time, or clear it');
  }
  for (const [sel, key] of [['#c-start', 'start_at'], ['#c-expires', 'expires_at']]) {
    if (!val(sel)) continue;
    const d = new Date(val(sel)); // datetime-local: local time -> RFC 3339 UTC
    if (Number.isNaN(d.getTime())) bad(key, 'not a valid date and time');
    else body[key] = d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  }
  const [start, end, tz] = [val('#c-quiet-start'), val('#c-quiet-end'), val('#c-time-zone')];
  if (start || end) {
    if (!start || !end) bad('quiet hours', 'give both a start and an end');
    body.quiet_hours = tz ? { start, end, time_zone: tz } : { start, end };
  } else if (tz) {
    bad('time zone', 'only used with quiet hours: set them or clear it');
  }
  const file = $('#c-file').files[0] || null;
  const type = file ? UPLOAD_TYPES[(file.name.split('.').pop() || '').toLowerCase()] : '';
  if (file && !type) bad('recipients file', 'must end in .csv, .ndjson, .jsonl or .json');
  if (fields.length) throw new ApiError(0, 'Please fix the form:', { fields });
  return { body, file, type };
}

async function submitCampaign(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  showFormErrors(null);
  setFormStatus('');
  let input;
  try { input = readForm(); } catch (e) { showFormErrors(e); return; }
  const { body, file, type } = input;
  const gen = state.session;
  const bodyJson = JSON.stringify(body);
  const retry = state.retryDraft;
  let campaign = null;
  $('#c-submit').disabled = true;
  try {
    if (file && retry && retry.bodyJson === bodyJson) {
      campaign = retry.campaign; // the upload was rejected: send the new file to that draft
    } else {
      setFormStatus('Creating the campaign…');
      // The same form sent again after a create whose answer was lost (a network error, a
      // 503) goes under the same key: the draft that create may have made is answered, no
      // second one is made.
      let last = null;
      try { last = JSON.parse(sessionStorage.getItem(CREATE_STORAGE) || 'null'); } catch (e) { /* none */ }
      const key = last && last.bodyJson === bodyJson && typeof last.key === 'string'
        ? last.key : idempotencyKey();
      sessionStorage.setItem(CREATE_STORAGE, JSON.stringify({ bodyJson, key }));
      campaign = await api('POST', '/campaigns', { json: body, headers: { 'Idempotency-Key': key } });
      sessionStorage.removeItem(CREATE_STORAGE);
      state.retryDraft = null;
      refreshCampaigns();
    }
    let result = null;
    if (file) {
      setFormStatus(`Uploading ${file.name} (${Math.ceil(file.size / 1024)} KB)…`);
      // The File itself is the body: the browser streams it.
      result = await api('POST', `/campaigns/${enc(campaign.id)}/recipients`, { body: file, type });
    }
    if (gen !== state.session) return;
    state.retryDraft = null;
    const n = num(result && result.inserted);
    const dup = num(result && result.duplicates);
    form.reset();
    fillProviders();
    setFormStatus(`Campaign created (${n} recipient${n === 1 ? '' : 's'}).`
      + (dup ? ` ${dup} duplicate${dup === 1 ? '' : 's'} dropped.` : ''), 'ok');
    refreshCampaigns();
  } catch (e) {
    if (e.status === 401 || gen !== state.session) return;
    const keep = campaign && e.status !== 404 && e.status !== 409; // can still take recipients
    state.retryDraft = keep ? { bodyJson, campaign } : null;
    setFormStatus(keep ? `Campaign “${campaign.name || body.name}” was saved as a draft without `
      + 'recipients. Fix the file and submit again to upload it to that draft (or cancel it).' : '', 'warn');
    showFormErrors(e);
  } finally {
    $('#c-submit').disabled = false;
  }
}

// 128 random bits in hex (crypto.randomUUID needs a secure context, which a page served
// over plain HTTP beyond localhost is not).
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function setFormStatus(text, kind = 'info') {
  $('#form-status').textContent = text;
  $('#form-status').className = `form-status form-status-${kind}`;
}

// err: an ApiError (message, fields, rows, errorRows), or null to clear.
function showFormErrors(err) {
  const box = $('#form-errors');
  box.replaceChildren();
  box.hidden = !err;
  if (!err) return;
  box.append(el('p', 'error-message', `${err.message || 'Request failed'}${err.status ? ` (HTTP ${err.status})` : ''}`));
  const rows = err.rows || [];
  const items = (err.fields || []).map((f) => `${f.field}: ${f.reason}`).concat(rows.map((r) =>
    `row ${r.row}${r.field ? `, ${r.field}` : ''}: ${r.reason}`));
  if (err.errorRows > rows.length) {
    items.push(`… and ${err.errorRows - rows.length} more invalid rows (${err.errorRows} in total)`);
  }
  if (!items.length) return;
  const ul = el('ul', 'error-details');
  ul.append(...items.map((t) => el('li', '', t)));
  box.append(ul);
}

/* ---------- formatting ---------- */

function formatEta(seconds) {
  if (!Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  const [d, h, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  return m ? `${m} min ${s % 60} s` : `${s} s`;
}

function formatMs(ms) {
  if (!Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : formatEta(ms / 1000);
}

function formatRate(rate) {
  if (!Number.isFinite(rate)) return '—';
  return `${rate === 0 ? 0 : rate >= 100 ? Math.round(rate) : rate.toFixed(1)}/s`;
}

function formatTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

function shortId(id) {
  return id ? String(id).slice(0, 8) : '—';
}

/* ---------- start ---------- */

function init() {
  $('#key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = $('#api-key').value.trim();
    if (!key) { showKeyForm('Enter an API key.'); return; }
    // A key is printable ASCII. Anything else (a zero-width space copied with it) no HTTP
    // header can carry: the browser would refuse every request, read here as the server
    // being out of reach.
    if (!/^[\x21-\x7e]+$/.test(key)) {
      showKeyForm('That key holds a space or a character no key has (an invisible one copied with it?). Paste the key alone.');
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    signIn();
  });
  $('#sign-out').addEventListener('click', (ev) => { ev.preventDefault(); signOut('Signed out.'); });
  // Another campaign's link pasted into the address bar of an open page.
  window.addEventListener('hashchange', () => { if (!$('#app').hidden) openLinked(); });
  $('#campaigns tbody').addEventListener('click', onListClick);
  $('#detail-close').addEventListener('click', closeDetail);
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && state.detailId) closeDetail(); });
  $('#create-campaign').addEventListener('submit', submitCampaign);
  $('#c-tenant').addEventListener('change', fillProviders);
  $('#c-provider').addEventListener('change', fillProviders);
  $('#c-channel').addEventListener('change', fillProviders);
  $('#c-reload').addEventListener('click', loadFormOptions);
  for (const form of ['#campaign-filters', '#recipient-filters', '#contact-filters', '#message-filters',
    '#suppression-filters', '#webhook-tenant-form', '#webhook-event-filters']) {
    $(form).addEventListener('submit', (ev) => ev.preventDefault()); // Enter in a search box
  }
  $('#f-status').addEventListener('change', filtersChanged);
  $('#f-tenant').addEventListener('change', filtersChanged);
  $('#f-name').addEventListener('input', () => afterTyping('campaigns', filtersChanged));
  $('#campaigns-next').addEventListener('click', () => turnPage(state.campaignPages, 'campaigns', true, refreshCampaigns));
  $('#campaigns-prev').addEventListener('click', () => turnPage(state.campaignPages, 'campaigns', false, refreshCampaigns));
  $('#r-state').addEventListener('change', recipientFiltersChanged);
  $('#r-address').addEventListener('input', () => afterTyping('recipients', recipientFiltersChanged));
  $('#recipients-next').addEventListener('click', () => turnPage(state.recipientPages, 'recipients', true, refreshDetail));
  $('#recipients-prev').addEventListener('click', () => turnPage(state.recipientPages, 'recipients', false, refreshDetail));
  $('#contacts').addEventListener('toggle', loadContacts);
  $('#k-tenant').addEventListener('change', contactFiltersChanged);
  $('#k-address').addEventListener('input', () => afterTyping('contacts', contactFiltersChanged));
  $('#contacts-next').addEventListener('click', () => turnPage(state.contactPages, 'contacts', true, loadContacts));
  $('#contacts-prev').addEventListener('click', () => turnPage(state.contactPages, 'contacts', false, loadContacts));
  $('#messages').addEventListener('toggle', loadMessages);
  $('#m-state').addEventListener('change', messageFiltersChanged);
  $('#m-to').addEventListener('input', () => afterTyping('messages', messageFiltersChanged));
  $('#m-reload').addEventListener('click', loadMessages);
  $('#messages-next').addEventListener('click', () => turnPage(state.messagePages, 'messages', true, loadMessages));
  $('#messages-prev').addEventListener('click', () => turnPage(state.messagePages, 'messages', false, loadMessages));
  $('#suppressions').addEventListener('toggle', loadSuppressions);
  $('#s-tenant').addEventListener('change', suppressionFiltersChanged);
  $('#s-channel').addEventListener('change', suppressionFiltersChanged);
  $('#s-address').addEventListener('input', () => afterTyping('suppressions', suppressionFiltersChanged));
  $('#suppressions-next').addEventListener('click', () => turnPage(state.suppressionPages, 'suppressions', true, loadSuppressions));
  $('#suppressions-prev').addEventListener('click', () => turnPage(state.suppressionPages, 'suppressions', false, loadSuppressions));
  $('#suppression-add').addEventListener('submit', addSuppressions);
  $('#webhook').addEventListener('toggle', loadWebhook);
  $('#w-tenant').addEventListener('change', webhookTenantChanged);
  $('#webhook-form').addEventListener('submit', (ev) => { ev.preventDefault(); setWebhook(false); });
  $('#w-rotate').addEventListener('click', () => setWebhook(true));
  $('#w-remove').addEventListener('click', removeWebhook);
  $('#w-reload').addEventListener('click', loadWebhook);
  $('#w-recover').addEventListener('click', recoverWebhookEvents);
  $('#w-test').addEventListener('click', testWebhook);
  $('#webhook-events').addEventListener('toggle', loadWebhookEvents);
  $('#we-delivery').addEventListener('change', webhookEventFiltersChanged);
  $('#webhook-events-next').addEventListener('click', () => turnPage(state.webhookEventPages, 'webhook-events', true, loadWebhookEvents));
  $('#webhook-events-prev').addEventListener('click', () => turnPage(state.webhookEventPages, 'webhook-events', false, loadWebhookEvents));
  if (typeof Intl.supportedValuesOf === 'function') { // time zone suggestions, offline
    $('#time-zones').append(...Intl.supportedValuesOf('timeZone').map((z) => option(z, '')));
  }
  if (refuseKeyInUrl()) {
    sessionStorage.removeItem(KEY_STORAGE);
    sessionStorage.removeItem(CREATE_STORAGE);
    showKeyForm('Keys in links are not accepted (they stay in browser history). Enter the key here.');
  } else if (sessionStorage.getItem(KEY_STORAGE)) signIn(); else showKeyForm('');
}

init();
