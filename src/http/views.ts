// Server-rendered pages: the form, the session page, the viewer shell, the
// user's list, and the answers for ended or unknown links.
import type { Machine } from '../catalog/descriptor.js';
import type { ClipboardMode, Config } from '../config/schema.js';
import type { SessionRow } from '../store/session-rows.js';
import type { QueueInfo } from '../launcher/types.js';
import { Html, csrfField, html, layout, formatDuration, type PageContext } from './html.js';
import { sessionSizes } from '../sessions/request.js';
import { REVOKED_LINK_MESSAGE } from './session-access.js';

/** The form's per-machine data attributes (public/form.js switches the CPU and memory fields with them). */
function machineSizeAttrs(sizes: ReturnType<typeof sessionSizes>): Html {
  return html`data-cpus="${sizes.cpus.max}" data-cpus-default="${sizes.cpus.default}" \
data-memory="${sizes.memoryMiB.max}" data-memory-default="${sizes.memoryMiB.default}"`;
}

export interface FormValues {
  machine?: string;
  cpus?: string;
  memoryMiB?: string;
  lifetimeS?: string;
  user?: string;
  email?: string;
  oneShot?: boolean;
  gpus?: boolean;
}

export function lifetimeChoices(limits: Config['limits']): number[] {
  const hourS = 3600;
  const dayS = 86400;
  const steps = [
    300, 900, 1800, hourS, 2 * hourS, 4 * hourS, 8 * hourS, 12 * hourS, dayS, 2 * dayS, 7 * dayS, 30 * dayS,
  ];
  const set = new Set(steps.filter((s) => s >= limits.minLifetimeS && s <= limits.maxLifetimeS));
  set.add(limits.defaultLifetimeS);
  set.add(limits.maxLifetimeS);
  return [...set].sort((a, b) => a - b);
}

export interface Availability {
  sessions: number;
  /** null: a cluster scheduler decides (desktops that do not fit wait in its queue). */
  cpus: number | null;
  memoryMiB: number | null;
  /** GPUs free now. */
  gpus: number;
  /**
   * GPUs this service can pass through, free or held (absent: as many as are free); 0: the GPU option
   * is not offered.
   */
  gpusUsable?: number;
}

export function formPage(
  ctx: PageContext, machines: Machine[], config: Config, values: FormValues = {}, error?: string, free?: Availability,
): string {
  const limits = config.limits;
  const oneShot = values.oneShot ?? config.sessions.oneShotDefault;
  const selected = values.machine ?? machines[0]?.name;
  const machine = machines.find((m) => m.name === selected) ?? machines[0];
  const sizes = machine
    ? sessionSizes(machine, limits)
    : { cpus: { default: 1, max: 1 }, memoryMiB: { default: 1024, max: 1024 } };
  const cpuMax = sizes.cpus.max;
  const memMax = sizes.memoryMiB.max;
  const lifetime = Number(values.lifetimeS ?? limits.defaultLifetimeS);
  const scripted = machines.filter((m) => m.bootScripts.allowUserScripts);
  const body = html`
<h1>Start a desktop</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
${machines.length === 0
    ? html`<p class="error">No machine is available on this server. \
An administrator must add one (see <code>qwdctl machines check</code>).</p>`
    : html`
<form method="post" action="/sessions" class="create">
  ${csrfField(ctx)}
  <fieldset class="machines">
    <legend>Machine</legend>
    ${machines.map((m) => html`<label class="machine">\
<input type="radio" name="machine" value="${m.name}" ${m.name === machine?.name ? html`checked` : ''} \
${machineSizeAttrs(sessionSizes(m, limits))}>
      <span><strong>${m.name}</strong> <small>${m.description}</small> \
<small class="muted">${m.arch}, ${m.format}</small></span></label>`)}
  </fieldset>
  <div class="row">
    <label>CPUs \
<input type="number" name="cpus" min="1" max="${cpuMax}" value="${values.cpus ?? sizes.cpus.default}" required></label>
    <label>Memory (MiB) <input type="number" name="memoryMiB" min="64" max="${memMax}" step="64" \
value="${values.memoryMiB ?? sizes.memoryMiB.default}" required></label>
    <label>Life-time <select name="lifetimeS">${lifetimeChoices(limits).map((s) => html`<option value="${s}" \
${s === lifetime ? html`selected` : ''}>${formatDuration(s)}</option>`)}</select></label>
  </div>
  ${ctx.identity
    ? html`<p>Desktop for <strong>${ctx.identity.user}</strong>.</p>`
    : html`<label>Your name <input type="text" name="user" maxlength="64" \
pattern="[A-Za-z0-9][A-Za-z0-9._@+\\-]{0,63}" value="${values.user ?? ''}" autocomplete="username" required></label>`}
  <label>E-mail for end-of-life warnings <small class="muted">(optional)</small> \
<input type="email" name="email" maxlength="254" value="${values.email ?? ''}" autocomplete="email"></label>
  ${free && free.gpus > 0
    ? html`<label class="check gpu"><input type="checkbox" name="gpus" value="1" ${values.gpus ? html`checked` : ''}> \
GPU (${free.gpus} free${config.gpu.machines ? `; for ${config.gpu.machines.join(', ')}` : ''})</label>`
    : free && (free.gpusUsable ?? 0) > 0
      ? html`<label class="check gpu"><input type="checkbox" name="gpus" value="1" disabled> \
GPU (0 free: all ${free.gpusUsable} in use; try again later)</label>`
      : ''}
  <label class="check"><input type="checkbox" name="oneShot" ${oneShot ? html`checked` : ''}> \
One-shot: end the desktop when its last viewer leaves</label>
  ${scripted.length > 0 ? html`<label>Boot script <small class="muted">(run as root at first boot; \
only for ${scripted.map((m) => m.name).join(', ')}; @USER@ @SESSION_NAME@ @VM@ are replaced)</small>
    <textarea name="script" rows="4" maxlength="65536" spellcheck="false"></textarea></label>` : ''}
  ${ctx.open ? html`<p class="hint">Anyone may type any name here: the name labels your desktop, \
it does not protect it. Keep the link you get private.</p>` : ''}
  ${free && free.cpus !== null ? html`<p class="hint availability">Free now on this server: \
${free.sessions} desktop${plural(free.sessions)}, ${free.cpus} CPU${plural(free.cpus)}, \
${free.memoryMiB} MiB${free.gpus || free.gpusUsable ? `, ${free.gpus} GPU${plural(free.gpus)}` : ''}.</p>` : ''}
  ${free && free.cpus === null ? html`<p class="hint availability">Desktops run on the cluster's compute nodes: \
when none is free, yours waits in the queue and starts by itself. \
${free.sessions} more desktop${plural(free.sessions)} may be started on this service now.</p>` : ''}
  <button type="submit" class="primary">Create</button>
</form>`}
`;
  return layout('New desktop', body, { scripts: ['/static/form.js'], ctx });
}

/** "s" after a count that is not 1. */
function plural(count: number): string {
  return count === 1 ? '' : 's';
}

export interface SessionLinks {
  page: string;
  viewer: string;
  ws: string;
  viewPage: string;
  viewViewer: string;
  viewWs: string;
}

function remainingText(row: SessionRow, now: number): string {
  return formatDuration(Math.max(0, Math.round((row.expiresAt - now) / 1000)));
}

/** When the desktop ends, and the countdown to it (public/session.js keeps it running). */
function endsAt(row: SessionRow, now: number): Html {
  const end = new Date(row.expiresAt);
  return html`<time datetime="${end.toISOString()}">${end.toUTCString()}</time> \
(<span class="countdown">${remainingText(row, now)}</span> left)`;
}

/** A share link in a read-only field, with its Copy button. */
function shareRow(link: string, label: string): Html {
  return html`<p class="share-row"><input class="share" type="text" readonly value="${link}" aria-label="${label}"> \
<button type="button" class="copy" data-copy="${link}">Copy</button></p>`;
}

function revokeForm(ctx: PageContext, action: string, confirm: string): Html {
  return html`<form method="post" action="${action}" data-confirm="${confirm}">${csrfField(ctx)}\
<button type="submit">Revoke and renew</button></form>`;
}

const STOP_CONFIRM = 'Stop this desktop? Unsaved work in it is lost.';

/** "waiting for a node (2nd in the queue; Slurm says: Resources)". */
export function queueText(queue: QueueInfo | null): string {
  if (!queue) return 'waiting for a node';
  const where = queue.position ? `, number ${queue.position} in the queue` : '';
  const why = queue.reason ? `; the scheduler says: ${queue.reason}` : '';
  return queue.state === 'waiting' ? `waiting for a node${where}${why}` : `starting on ${queue.node ?? 'a node'}`;
}

export function sessionPage(
  ctx: PageContext, row: SessionRow, links: SessionLinks, qr: { control: string; view: string },
  viewers: { control: number; view: number; names: string[] }, config: Config, now: number,
  balloon: { actualMiB: number } | null, manageable: boolean, queue: QueueInfo | null = null,
): string {
  const maxExpiresAt = row.createdAt + config.limits.maxLifetimeS * 1000;
  const canExtend = manageable && row.state === 'running' && row.expiresAt < maxExpiresAt;
  const waiting = row.state !== 'running';
  const body = html`
<h1>Your desktop <small class="muted">${row.machine}</small></h1>
<section class="session" data-expires-at="${row.expiresAt}" data-server-now="${now}" \
data-api="/api/v1/sessions/${row.token}" data-warn-before="${config.sessions.warnBeforeS.join(',')}" \
data-state="${row.state}">
  <p class="warning" hidden role="alert"></p>
  ${waiting
    ? html`<p class="queued" role="status">Your desktop is <strong class="queue-text">${queueText(queue)}</strong>. \
This page moves on by itself when it is ready; you can close it and come back with the link.</p>`
    : html`<p><a class="button primary big" href="${links.viewer}" target="_blank" rel="noopener">Connect</a></p>`}
  <dl>
    <dt>State</dt><dd class="state">${row.state}\
${row.oneShot ? ' (one-shot: ends when its last viewer leaves)' : ''}</dd>
    <dt>Resources</dt><dd>${row.cpus} CPU${plural(row.cpus)}, ${row.memoryMiB} MiB</dd>
    <dt>Owner</dt><dd>${row.owner}</dd>
    <dt>Ends at</dt><dd>${endsAt(row, now)}
      ${canExtend
        ? html`<form method="post" action="${links.page}/extend" class="inline">${csrfField(ctx)}\
<button type="submit">Extend by ${formatDuration(config.sessions.extendStepS)}</button></form>`
        : manageable ? html`<small class="muted">(maximum life-time reached)</small>` : ''}</dd>
    <dt>Connected now</dt><dd>\
<span class="viewers">${viewers.control + viewers.view} (${viewers.view} view-only)</span> \
<span class="viewer-names muted">${viewers.names.length ? `: ${[...new Set(viewers.names)].join(', ')}` : ''}\
</span></dd>
    ${row.gpus ? html`<dt>GPU</dt><dd>${row.gpus} passed through</dd>` : ''}
    ${balloon ? html`<dt>Guest memory</dt><dd class="balloon">${balloon.actualMiB} of ${row.memoryMiB} MiB\
${balloon.actualMiB < row.memoryMiB
    ? ' (memory was taken back while nobody was connected; it returns when you connect)'
    : ''}\
</dd>` : ''}
  </dl>
  <h2>Share</h2>
  <div class="links">
    <div class="link">
      <h3>Control link</h3>
      <p>Anyone with this link can see <em>and use</em> this desktop (keyboard and mouse), extend and stop it.</p>
      ${shareRow(links.page, 'Control link')}
      <figure class="qr control">${new Html(qr.control)}<figcaption>Scan to control this desktop</figcaption></figure>
      ${manageable ? revokeForm(ctx, `${links.page}/revoke/control`, 'Make a new control link? The current one stops '
        + 'working and everyone using it is disconnected, you too: you will be sent to the new link.') : ''}
    </div>
    <div class="link">
      <h3>View-only link</h3>
      <p>Anyone with this link can watch, but not type, click or copy.</p>
      ${shareRow(links.viewPage, 'View-only link')}
      <figure class="qr view">${new Html(qr.view)}<figcaption>Scan to watch this desktop</figcaption></figure>
      ${manageable ? revokeForm(ctx, `${links.page}/revoke/view`,
        'Make a new view-only link? Everyone watching with the current one is disconnected.') : ''}
    </div>
  </div>
  ${manageable
    ? html`<form method="post" action="${links.page}/stop" class="stop" data-confirm="${STOP_CONFIRM}">
    ${csrfField(ctx)}<button type="submit" class="danger">Stop</button>
  </form>`
    : html`<p class="hint">Shared with you by ${row.owner}: only they (or an administrator) can extend or stop it.</p>`}
</section>`;
  return layout('Desktop', body, { scripts: ['/static/session.js'], ctx });
}

export function viewOnlyPage(row: SessionRow, links: SessionLinks, config: Config, now: number): string {
  const body = html`
<h1>Desktop <small class="muted">${row.machine}, view-only</small></h1>
<section class="session" data-expires-at="${row.expiresAt}" data-server-now="${now}" data-state="${row.state}" \
data-api="/api/v1/sessions/${row.viewToken}" data-warn-before="${config.sessions.warnBeforeS.join(',')}">
  <p class="warning" hidden role="alert"></p>
  <p><a class="button primary big" href="${links.viewViewer}" target="_blank" rel="noopener">Watch</a></p>
  <p>This link lets you watch the desktop; keyboard and mouse are not passed on.</p>
  <dl>
    <dt>Ends at</dt><dd>${endsAt(row, now)}</dd>
  </dl>
</section>`;
  return layout('Desktop (view-only)', body, { scripts: ['/static/session.js'] });
}


export function revokedPage(): string {
  const body = html`<h1>This link was revoked</h1><p>${REVOKED_LINK_MESSAGE}</p>\
<p><a class="button" href="/">Start a new desktop</a></p>`;
  return layout('Link revoked', body);
}

export function endedPage(reason: string, endedAt: number): string {
  const body = html`<h1>This desktop has ended</h1><p>It ended on ${new Date(endedAt).toUTCString()}: ${reason}.</p>\
<p><a class="button primary" href="/">Start a new desktop</a></p>`;
  return layout('Desktop ended', body);
}

export function notFoundPage(what = 'This link does not lead to a desktop. Check that it was copied whole.'): string {
  const body = html`<h1>Not found</h1><p>${what}</p><p><a class="button" href="/">Start a new desktop</a></p>`;
  return layout('Not found', body);
}

export function errorPage(title: string, message: string, back = '/'): string {
  const body = html`<h1>${title}</h1><p class="error">${message}</p><p><a class="button" href="${back}">Back</a></p>`;
  return layout(title, body);
}

export interface AdminView {
  host: { cpus: number; load1: number; availableMemoryMiB: number; totalMemoryMiB: number };
  reserved: { cpus: number; memoryMiB: number };
}

export function managePage(
  ctx: PageContext, rows: SessionRow[], pageUrl: (row: SessionRow) => string, now: number,
  admin: AdminView | null = null,
): string {
  const none = admin
    ? 'No desktop is running.'
    : ctx.identity ? 'You have no desktop running.' : 'No desktop was started from this browser.';
  const body = html`
<h1>${admin ? 'All desktops' : 'My desktops'}</h1>
${admin ? html`<p class="hint">Host: ${admin.host.cpus} CPUs, load ${admin.host.load1.toFixed(2)}, \
${admin.host.availableMemoryMiB} of ${admin.host.totalMemoryMiB} MiB free; \
desktops hold ${admin.reserved.cpus} CPUs and ${admin.reserved.memoryMiB} MiB.</p>` : ''}
${rows.length === 0
    ? html`<p>${none} <a href="/">Start one</a>.</p>`
    : html`<table class="sessions"><thead><tr>${admin ? html`<th>Owner</th>` : ''}\
<th>Machine</th><th>Resources</th><th>State</th><th>Time left</th><th></th></tr></thead><tbody>
${rows.map((r) => html`<tr>${admin ? html`<td>${r.owner}</td>` : ''}<td>${r.machine}</td>\
<td>${r.cpus} CPU, ${r.memoryMiB} MiB</td><td>${r.state}</td>\
<td>${formatDuration(Math.round((r.expiresAt - now) / 1000))}</td>
<td><a class="button" href="${pageUrl(r)}">Open</a> \
<a class="button primary" href="${pageUrl(r)}/view" target="_blank" rel="noopener">Connect</a>
<form method="post" action="${pageUrl(r)}/stop" class="inline" data-confirm="${STOP_CONFIRM}">${csrfField(ctx)}\
<input type="hidden" name="back" value="manage"><button type="submit" class="danger">Stop</button></form></td></tr>`)}
</tbody></table>`}
${admin && rows.length ? html`<form method="post" action="/admin/stop-all" class="stop" \
data-confirm="Stop ALL ${rows.length} desktops? Unsaved work in them is lost.">${csrfField(ctx)}
  <label class="check"><input type="checkbox" name="confirm" value="yes" required> \
I understand that every desktop on this server stops now</label>
  <button type="submit" class="danger">Stop all desktops</button></form>` : ''}`;
  return layout(admin ? 'All desktops' : 'My desktops', body, { scripts: ['/static/session.js'], ctx });
}

/**
 * How the viewer fits the desktop to the window:
 * `remote` asks the guest to change its resolution (RFB SetDesktopSize).
 */
export type ResizeMode = 'remote' | 'scale';

export interface ViewerDisplay {
  /**
   * Which way the clipboard may go for this viewer: the bridge's clipboardMode(machine, link), which it
   * enforces; the page only hides what is not allowed.
   */
  clipboard: ClipboardMode;
  resize: ResizeMode;
}

export const DEFAULT_VIEWER_DISPLAY: ViewerDisplay = { clipboard: 'both', resize: 'scale' };

const FUNCTION_KEYS = Array.from({ length: 12 }, (_, i) => `F${i + 1}`);

/**
 * The full-window viewer: a toolbar (keys, clipboard, display settings, full
 * screen, connection) above noVNC's screen; public/viewer.js brings it to life.
 * Controls a viewer cannot use (view-only: keys and paste; a clipboard policy
 * that forbids a direction) are not rendered at all.
 * `now`: the server's clock, which the viewer counts down on (the browser's may be off by minutes).
 */
export function viewerPage(
  token: string, expiresAt: number, access: 'control' | 'view', warnBeforeS: readonly number[],
  ticket: string | null = null, now = Date.now(), display: ViewerDisplay = DEFAULT_VIEWER_DISPLAY,
): string {
  const control = access === 'control';
  const toGuest = control && (display.clipboard === 'both' || display.clipboard === 'to-guest');
  const fromGuest = display.clipboard === 'both' || display.clipboard === 'from-guest';
  const keyButton = (label: string, key: string, name = label) =>
    html`<button type="button" class="key" data-key="${key}" aria-label="Send ${name}">${label}</button>`;
  const stickyButton = (label: string, key: string) => html`<button type="button" class="key sticky" \
data-sticky="${key}" aria-pressed="false" aria-label="${label} (held for the next key)">${label}</button>`;
  const clipboardText = toGuest && fromGuest
    ? 'Text copied in the desktop shows here; text you put here can be pasted in the desktop.'
    : toGuest ? 'Text you put here can be pasted in the desktop.' : 'Text copied in the desktop shows here.';
  const body = html`
<div class="chrome">
<header class="toolbar" role="toolbar" aria-label="Desktop controls" aria-keyshortcuts="Control+Alt+Shift">
  ${control
    ? html`<button type="button" id="osk-button" class="tool" aria-label="Show the on-screen keyboard" hidden>\
Keyboard</button>
  <button type="button" id="keys-button" class="tool" aria-expanded="false" aria-controls="keys-panel" \
aria-label="Special keys">Keys</button>`
    : html`<span id="view-only-badge" class="badge" \
title="You can watch this desktop; keyboard and mouse are not passed on.">View only</span>`}
  ${toGuest || fromGuest ? html`<button type="button" id="clipboard-button" class="tool" aria-expanded="false" \
aria-controls="clipboard-panel" aria-label="Clipboard">Clipboard</button>` : ''}
  <button type="button" id="display-button" class="tool" aria-expanded="false" aria-controls="display-panel" \
aria-label="Display settings">Display</button>
  <button type="button" id="fullscreen-button" class="tool" aria-pressed="false" aria-label="Full screen">\
Full screen</button>
  <div id="status" class="status" data-token="${token}" data-expires-at="${expiresAt}" data-server-now="${now}" \
data-access="${access}" data-warn-before="${warnBeforeS.join(',')}" data-ticket="${ticket ?? ''}" \
data-clipboard="${display.clipboard}" data-resize="${display.resize}" role="status">Connecting…</div>
  <span id="connection" class="connection" data-state="connecting" role="img" aria-label="Connecting">\
<span class="dot" aria-hidden="true"></span><span class="rtt"></span></span>
</header>
${control ? html`<section id="keys-panel" class="panel" aria-label="Special keys" hidden>
  <div class="keys-row">
    ${stickyButton('Ctrl', 'Control')}${stickyButton('Alt', 'Alt')}${stickyButton('Super', 'Super')}
    ${keyButton('Esc', 'Escape', 'Escape')}${keyButton('Tab', 'Tab')}
    ${keyButton('←', 'ArrowLeft', 'Left arrow')}${keyButton('↑', 'ArrowUp', 'Up arrow')}\
${keyButton('↓', 'ArrowDown', 'Down arrow')}${keyButton('→', 'ArrowRight', 'Right arrow')}
    <button type="button" id="ctrl-alt-del" class="key wide" aria-label="Send Ctrl+Alt+Del">Ctrl+Alt+Del</button>
  </div>
  <div class="keys-row fkeys">${FUNCTION_KEYS.map((f) => keyButton(f, f))}</div>
  <p class="hint">Ctrl, Alt and Super stay pressed for the next key (tap again to release).</p>
</section>` : ''}
${toGuest || fromGuest ? html`<section id="clipboard-panel" class="panel" aria-label="Clipboard" hidden>
  <label for="clipboard-text">${clipboardText}</label>
  <textarea id="clipboard-text" rows="4" spellcheck="false" ${toGuest ? '' : html`readonly`}></textarea>
  <p class="panel-actions">\
${toGuest ? html`<button type="button" id="clipboard-send" class="primary">Send to the desktop</button>` : ''}
  <span id="clipboard-note" class="hint" role="status"></span></p>
</section>` : ''}
<section id="display-panel" class="panel" aria-label="Display settings" hidden>
  <fieldset>
    <legend>Size</legend>
    <label class="check"><input type="radio" name="scaling" value="fit"> Fit to the window</label>
    <label class="check"><input type="radio" name="scaling" value="native"> Actual size (scroll)</label>
    ${display.resize === 'remote' && control ? html`<label class="check">\
<input type="radio" name="scaling" value="remote"> Resize the desktop to the window</label>` : ''}
  </fieldset>
  <label for="quality">Picture quality <output id="quality-value" for="quality"></output>
    <input type="range" id="quality" min="0" max="9" step="1" aria-describedby="quality-hint"></label>
  <p id="quality-hint" class="hint">Lower is faster on a slow network.</p>
  <label for="compression">Compression <output id="compression-value" for="compression"></output>
    <input type="range" id="compression" min="0" max="9" step="1" aria-describedby="compression-hint"></label>
  <p id="compression-hint" class="hint">Higher uses less network and more server time.</p>
</section>
</div>
<div id="others" class="others" hidden></div>
<main id="screen" aria-label="Remote desktop (Ctrl+Alt+Shift goes back to the toolbar)"></main>
${control ? html`<input id="osk-input" class="osk-input" type="text" tabindex="-1" autocomplete="off" \
autocapitalize="off" autocorrect="off" spellcheck="false" enterkeyhint="send" \
aria-label="On-screen keyboard input: what you type here is sent to the desktop">` : ''}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Desktop · qemu-web-desktop</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/viewer.css">
<script type="module" src="/static/viewer.js"></script>
</head>
<body class="viewer">
${body}
</body>
</html>
`;
}

/** What opening a mailed login link shows: who would be logged in, and the button that does it. */
export function emailLinkPage(ctx: PageContext, email: string, action: string): string {
  const body = html`
<h1>Log in</h1>
<p>Log in as <strong>${email}</strong>?</p>
<form method="post" action="${action}" class="create">${csrfField(ctx)}
  <button type="submit" class="primary" autofocus>Log in</button>
</form>
<p class="hint">The link works once. If you did not ask for it, close this page.</p>`;
  return layout('Log in', body, { ctx });
}

export interface LoginOffer {
  password: boolean;
  email: boolean;
  error?: string;
  notice?: string;
  next: string;
  user?: string;
  /** Single sign-on backends: one "Log in with <label>" button each. */
  sso?: Array<{ name: string; label: string }>;
}

export function loginPage(ctx: PageContext, opts: LoginOffer): string {
  const body = html`
<h1>Log in</h1>
${opts.error ? html`<p class="error" role="alert">${opts.error}</p>` : ''}
${opts.notice ? html`<p class="notice" role="status">${opts.notice}</p>` : ''}
${opts.password ? html`<form method="post" action="/login" class="create">
  ${csrfField(ctx)}<input type="hidden" name="next" value="${opts.next}">
  <label>User name \
<input type="text" name="user" maxlength="64" value="${opts.user ?? ''}" autocomplete="username" required \
autofocus></label>
  <label>Password \
<input type="password" name="password" maxlength="1024" autocomplete="current-password" required></label>
  <button type="submit" class="primary">Log in</button>
</form>` : ''}
${opts.email ? html`<form method="post" action="/login/email" class="create">
  ${csrfField(ctx)}
  <label>${opts.password ? 'Or get a login link by e-mail' : 'Your e-mail address'} \
<input type="email" name="email" maxlength="254" autocomplete="email" required></label>
  <button type="submit">Send me a login link</button>
</form>` : ''}`;
  // Single sign-on: a button each (a form, so that the login start carries the CSRF token); the main one
  // when there is no password form.
  const main = opts.password || opts.email ? '' : html` class="primary" autofocus`;
  const sso = (opts.sso ?? []).map((b) => html`\
<form method="post" action="/auth/oidc/${b.name}/login" class="create sso">
  ${csrfField(ctx)}<input type="hidden" name="next" value="${opts.next}">
  <button type="submit"${main}>Log in with ${b.label}</button>
</form>`);
  return layout('Log in', html`${body}${sso}`, { ctx });
}
