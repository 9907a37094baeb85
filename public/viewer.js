// Full-window noVNC viewer with its toolbar. Connects to /ws/<token> on this
// server, fits the remote screen to the window (or shows it 1:1, or asks the
// guest to resize), reconnects after network hiccups, counts down to the end
// and says clearly when the desktop has ended. The keys, the clipboard and the
// settings live in their own modules; this file owns the connection.
import RFB from '/novnc/core/rfb.js';
import { serverClock } from '/static/server-clock.js';
import { createKeys } from '/static/viewer-keys.js';
import { createClipboard } from '/static/viewer-clipboard.js';
import { readSetting, writeSetting } from '/static/viewer-settings.js';

const status = document.getElementById('status');
const token = status.dataset.token;
let expiresAt = Number(status.dataset.expiresAt);
// The server's clock, not the browser's (which may be minutes off).
const clock = serverClock(Number(status.dataset.serverNow));
const viewOnly = status.dataset.access === 'view';
const remoteResize = status.dataset.resize === 'remote' && !viewOnly;
const warnBefore = (status.dataset.warnBefore || '').split(',').filter(Boolean).map(Number);
const others = document.getElementById('others');
const connection = document.getElementById('connection');
const screen = document.getElementById('screen');
// The ticket (logged-in viewers only) lets the session page show who is connected.
const ticket = status.dataset.ticket;
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/${token}${ticket ? `?t=${encodeURIComponent(ticket)}` : ''}`;
let rfb = null;
let ended = false;
let retries = 0;

const keys = createKeys({
  keysPanel: document.getElementById('keys-panel'),
  oskButton: document.getElementById('osk-button'),
  oskInput: document.getElementById('osk-input'),
});
// A view-only viewer that receives the guest's clipboard (bridge.viewOnlyClipboard):
// its input events are stopped before they reach noVNC's canvas (the bridge drops them anyway).
const viewOnlyCopies = viewOnly && ['both', 'from-guest'].includes(status.dataset.clipboard);
if (viewOnlyCopies) {
  const stop = (event) => { event.stopPropagation(); event.preventDefault(); };
  for (const type of ['keydown', 'keyup', 'keypress', 'mousedown', 'mouseup', 'mousemove', 'wheel', 'contextmenu',
    'touchstart', 'touchmove', 'touchend', 'pointerdown', 'pointerup', 'pointermove', 'click', 'dblclick']) {
    screen.addEventListener(type, stop, { capture: true, passive: false });
  }
}
const clipboard = createClipboard({
  policy: status.dataset.clipboard || 'both',
  viewOnly,
  text: document.getElementById('clipboard-text'),
  send: document.getElementById('clipboard-send'),
  note: document.getElementById('clipboard-note'),
});

function show(text, kind = '') {
  status.textContent = text;
  status.className = `status ${kind}`;
  // A screen reader hears the changes that matter (connected, warnings, the end), not the countdown every second.
  status.setAttribute('aria-live', kind === 'quiet' ? 'off' : 'polite');
}

/** The connection indicator: connecting | connected | reconnecting | ended, with the last round-trip time. */
function indicate(state, rttMs = null) {
  connection.dataset.state = state;
  const rtt = connection.querySelector('.rtt');
  if (state !== 'connected') rtt.textContent = '';
  else if (rttMs !== null) rtt.textContent = `${Math.round(rttMs)} ms`;
  const label = {
    connecting: 'Connecting',
    reconnecting: 'Reconnecting',
    ended: 'Disconnected',
    connected: `Connected${rtt.textContent ? `, round trip to the server ${rtt.textContent}` : ''}`,
  }[state];
  connection.setAttribute('aria-label', label);
  connection.title = label;
}

function remaining() {
  const s = Math.max(0, Math.round((expiresAt - clock.now()) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min left` : `${m} min ${s % 60} s left`;
}

// --- Display settings: size mode, quality, compression (remembered per browser).

const coarsePointer = window.matchMedia('(pointer: coarse)');
const scalingKey = remoteResize ? 'scalingRemote' : 'scaling';
let scaling = readSetting(scalingKey);
if (scaling === 'remote' && !remoteResize) scaling = 'fit';
let quality = readSetting('quality');
let compression = readSetting('compression');

function applyDisplay() {
  if (!rfb) return;
  // Fit: scaled to the window. Actual size: 1:1, the screen scrolls. Remote: the guest follows the window
  // (RFB SetDesktopSize), scaled meanwhile and when the guest cannot.
  rfb.scaleViewport = scaling !== 'native';
  rfb.resizeSession = scaling === 'remote';
  // Actual size on a touch screen: the page cannot scroll under noVNC's gestures, so noVNC clips the desktop to
  // the window and a one-finger drag moves the view (a tap still clicks). With a mouse, scroll bars do it.
  const pan = scaling === 'native' && coarsePointer.matches;
  rfb.clipViewport = pan;
  rfb.dragViewport = pan;
  rfb.qualityLevel = quality;
  rfb.compressionLevel = compression;
  screen.dataset.scaling = scaling;
}

for (const radio of document.querySelectorAll('input[name=scaling]')) {
  radio.checked = radio.value === scaling;
  radio.addEventListener('change', () => {
    scaling = radio.value;
    writeSetting(scalingKey, scaling);
    applyDisplay();
  });
}
for (const [id, get, set] of [
  ['quality', () => quality, (v) => { quality = v; }],
  ['compression', () => compression, (v) => { compression = v; }],
]) {
  const range = document.getElementById(id);
  const out = document.getElementById(`${id}-value`);
  range.value = String(get());
  out.textContent = String(get());
  range.addEventListener('input', () => {
    set(Number(range.value));
    out.textContent = range.value;
    writeSetting(id, Number(range.value));
    applyDisplay();
  });
}

// --- Panels: one open at a time, under the toolbar; Escape closes and gives the focus back.

const panelButtons = [...document.querySelectorAll('button[aria-controls]')];
function closePanels(except = null) {
  for (const button of panelButtons) {
    if (button === except) continue;
    button.setAttribute('aria-expanded', 'false');
    document.getElementById(button.getAttribute('aria-controls')).hidden = true;
  }
}
for (const button of panelButtons) {
  const panel = document.getElementById(button.getAttribute('aria-controls'));
  button.addEventListener('click', (event) => {
    const open = panel.hidden;
    closePanels(button);
    panel.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    // Opened from the keyboard (Enter or Space: a click with no pointer): the focus goes into the panel.
    if (open && event.detail === 0) {
      panel.querySelector('button, input:not([type=radio]), input:checked, textarea')?.focus();
    }
  });
  panel.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape') return;
    event.stopPropagation();
    closePanels();
    button.focus();
  });
}
screen.addEventListener('pointerdown', () => closePanels());
// A click on a toolbar button leaves the focus where it was: on the desktop (typing goes on there) or in the
// on-screen keyboard (which would close). Keyboard users still reach every button with Tab.
document.querySelector('.toolbar').addEventListener('mousedown', (event) => {
  if (event.target.closest('button')) event.preventDefault();
});

// Out of the desktop with the keyboard: once it has the focus every key (Tab too) goes to the guest, so
// Ctrl+Alt+Shift, which no desktop uses alone, gives the focus to the toolbar. Caught before noVNC sees the
// third key; it lets go of the other two when the desktop loses the focus.
document.addEventListener('keydown', (event) => {
  if (!(event.ctrlKey && event.altKey && event.shiftKey) || !['Control', 'Alt', 'Shift'].includes(event.key)) return;
  if (!(event.target instanceof HTMLCanvasElement)) return;
  event.preventDefault();
  event.stopPropagation();
  document.querySelector('.toolbar button:not([hidden])')?.focus();
}, true);

// --- Full screen (the whole page, toolbar included).

const fullscreenButton = document.getElementById('fullscreen-button');
if (!document.fullscreenEnabled) fullscreenButton.hidden = true;
fullscreenButton.addEventListener('click', async () => {
  try {
    if (document.fullscreenElement) await document.exitFullscreen();
    else await document.documentElement.requestFullscreen({ navigationUI: 'hide' });
  } catch (err) {
    console.warn('full screen refused:', err); // the browser said no (no user gesture, policy): nothing to undo
  }
});
document.addEventListener('fullscreenchange', () => {
  const on = !!document.fullscreenElement;
  fullscreenButton.setAttribute('aria-pressed', String(on));
  fullscreenButton.textContent = on ? 'Exit full screen' : 'Full screen';
  fullscreenButton.setAttribute('aria-label', on ? 'Exit full screen' : 'Full screen');
});

// --- The connection.

function connect() {
  show('Connecting…');
  indicate(retries ? 'reconnecting' : 'connecting');
  rfb = new RFB(screen, wsUrl, { shared: true });
  // The server enforces view-only; this only stops the browser from trying.
  // noVNC in view-only mode also ignores the guest's clipboard, so a view-only
  // viewer the site lets copy keeps noVNC's input on and this page stops it instead.
  rfb.viewOnly = viewOnly && !viewOnlyCopies;
  rfb.focusOnClick = !keys.typing;
  rfb.background = '#1b1b1b';
  applyDisplay();
  keys.setRfb(rfb);
  clipboard.setRfb(rfb);
  window.qwdRfb = rfb;
  rfb.addEventListener('connect', () => {
    retries = 0;
    indicate('connected');
    show(`${viewOnly ? 'View-only' : 'Connected'} · ${remaining()}`, 'quiet');
    // Only when nothing else has the focus: a keyboard user may be on the toolbar (from the desktop, Tab goes to
    // the guest).
    if (!document.activeElement || document.activeElement === document.body) rfb.focus();
    void poll();
  });
  rfb.addEventListener('disconnect', async (event) => {
    keys.setRfb(null);
    if (ended) return;
    indicate('reconnecting');
    // Ask the server why: an ended desktop answers 410, a live one 200.
    const answer = await clock.fetch(`/api/v1/sessions/${token}`).catch(() => null);
    if (answer && (answer.status === 410 || answer.status === 404)) {
      ended = true;
      indicate('ended');
      const why = answer.status === 410 ? (await answer.json().catch(() => null))?.error?.message : null;
      show(why || 'This desktop has ended.', 'error');
      return;
    }
    if (retries++ < 10) {
      show(`Connection lost${event.detail.clean ? '' : ' unexpectedly'}; reconnecting…`, 'warn');
      setTimeout(connect, Math.min(500 * retries, 5000));
    } else {
      indicate('ended');
      show('Cannot reach the desktop. Reload the page to try again.', 'error');
    }
  });
  rfb.addEventListener('desktopname', (event) => {
    document.title = `${event.detail.name} · qemu-web-desktop`;
  });
}

setInterval(() => {
  if (ended || !rfb) return;
  // Whole seconds, as shown (and as the session page counts): "ends in 6 s" from the moment it says 6 s.
  const s = Math.round((expiresAt - clock.now()) / 1000);
  if (warnBefore.some((w) => s <= w)) show(`This desktop ends in ${remaining().replace(' left', '')}: save your work.`, 'warn');
  else if (status.classList.contains('quiet')) status.textContent = `${viewOnly ? 'View-only' : 'Connected'} · ${remaining()}`;
}, 1000);

/**
 * Who else is here (a small indicator when others are watching), the expiry
 * (Extend elsewhere moves it) and the round trip to the broker, timed on the
 * same API request.
 */
async function poll() {
  if (ended) return;
  const sent = performance.now();
  const res = await clock.fetch(`/api/v1/sessions/${token}`).catch(() => null);
  const rttMs = performance.now() - sent;
  if (!res || !res.ok) return;
  const info = await res.json();
  if (connection.dataset.state === 'connected') indicate('connected', rttMs);
  expiresAt = Date.parse(info.expiresAt);
  const count = Math.max(0, info.viewers - 1);
  others.hidden = count === 0;
  others.textContent = count === 1 ? '1 other person is connected' : `${count} other people are connected`;
}
setInterval(poll, 5000);

connect();
